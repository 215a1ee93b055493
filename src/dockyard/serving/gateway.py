"""The Gateway: where the routes find the deployment for a model name and optional version.

``LocalGateway`` serves deployments in this process; the Ray backend implements the same protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from dockyard.errors import InvalidInput, NotFound
from dockyard.registry.refs import DEFAULT_ALIAS, ModelRef
from dockyard.services.workspace import Workspace
from dockyard.serving.deployments import Deployment

logger = logging.getLogger(__name__)


class Gateway(Protocol):
    """What the HTTP layer needs from whatever runs the models."""

    def is_ready(self) -> bool: ...

    def model_names(self) -> list[str]: ...

    def deployment(self, name: str, version: str | None = None) -> Deployment: ...

    def deployments(self, name: str) -> list[Deployment]: ...

    def close(self) -> None: ...


class LocalGateway:
    """Deployments in this process, keyed by model name; the first version given is the default."""

    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self._by_name: dict[str, dict[int, Deployment]] = {}
        for deployment in deployments:
            self._by_name.setdefault(deployment.name, {})[deployment.version.version] = deployment

    def is_ready(self) -> bool:
        return bool(self._by_name)

    def model_names(self) -> list[str]:
        return list(self._by_name)

    def deployments(self, name: str) -> list[Deployment]:
        return list(self._versions(name).values())

    def deployment(self, name: str, version: str | None = None) -> Deployment:
        versions = self._versions(name)
        if version is None:
            return next(iter(versions.values()))
        if not version.isdigit() or int(version) not in versions:
            loaded = ", ".join(str(number) for number in versions)
            raise NotFound(
                f"model {name!r} has no version {version!r} on this server; loaded: {loaded}"
            )
        return versions[int(version)]

    def fork_unsafe(self) -> list[str]:
        """Versions whose loaded runtime must not be shared by forked workers (CUDA contexts)."""
        return [d.version.ref for d in self._every_deployment() if not d.runtime.fork_safe]

    def start(self) -> None:
        """Fork isolated models' children; call it in each serving process before its threads."""
        for deployment in self._every_deployment():
            deployment.start()

    def close(self) -> None:
        for deployment in self._every_deployment():
            deployment.close()

    def _every_deployment(self) -> Iterator[Deployment]:
        for versions in self._by_name.values():
            yield from versions.values()

    def _versions(self, name: str) -> dict[int, Deployment]:
        try:
            return self._by_name[name]
        except KeyError:
            served = ", ".join(self._by_name) or "none"
            raise NotFound(f"model {name!r} is not served here; served models: {served}") from None


def default_refs(workspace: Workspace) -> list[ModelRef]:
    """Every model's ``production`` alias: what ``dockyard serve`` serves when given no models."""
    refs = [
        ModelRef(model.name, alias=DEFAULT_ALIAS)
        for model in workspace.store.list_models()
        if DEFAULT_ALIAS in model.aliases
    ]
    if not refs:
        raise InvalidInput(
            f"no model has a {DEFAULT_ALIAS!r} alias; name the models to serve "
            f"(dockyard serve fraud:1) or set one (dockyard models alias fraud {DEFAULT_ALIAS} 1)"
        )
    return refs


def build_local_gateway(workspace: Workspace, refs: Sequence[ModelRef]) -> LocalGateway:
    """Resolve each reference, load its runtime (verifying the artifact) and wrap it for serving."""
    deployments = []
    for ref in refs:
        version = workspace.store.resolve(ref)
        runtime = workspace.load(version)
        logger.info("loaded %s (%s) as %s", version.ref, version.framework, ref)
        deployments.append(Deployment.create(version, runtime, workspace.settings))
    return LocalGateway(deployments)
