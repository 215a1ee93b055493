"""The Gateway: where the routes find the deployment for a model name and optional version.

``LocalGateway`` serves deployments in this process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from dockyard.errors import DockyardError, InvalidInput, NotFound, NotReady
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import DEFAULT_ALIAS, ModelRef
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace
from dockyard.serving.deployments import Deployment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadFailure:
    """A model reference the server was asked to serve but could not load, and why.

    ``version`` is the version the reference resolved to, when it got that far (a corrupt
    artifact, a missing extra, a refused type); None when resolving failed (an unknown alias).
    """

    ref: ModelRef
    error: Exception
    version: ModelVersion | None = None

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def number(self) -> int | None:
        """The version number it names or resolved to, if any."""
        return self.version.version if self.version is not None else self.ref.version

    @property
    def label(self) -> str:
        """The reference as given, with the version it resolved to when that is not in it."""
        if self.version is None or self.ref.version is not None:
            return str(self.ref)
        return f"{self.ref} (version {self.version.version})"

    @property
    def reason(self) -> str:
        error = self.error
        if isinstance(error, DockyardError):
            return error.message
        return f"{type(error).__name__}: {error}"

    def not_ready(self) -> NotReady:
        return NotReady(f"model {self.label} is not served: it failed to load: {self.reason}")


class Gateway(Protocol):
    """What the HTTP layer needs from whatever runs the models."""

    def is_ready(self) -> bool: ...

    def model_names(self) -> list[str]: ...

    def deployment(self, name: str, version: str | None = None) -> Deployment: ...

    def deployments(self, name: str) -> list[Deployment]: ...

    def failure(self, name: str, version: str | None = None) -> LoadFailure | None: ...

    def close(self) -> None: ...


class LocalGateway:
    """Deployments in this process, keyed by model name; the first version given is the default.

    ``failures`` are the references that could not be loaded: asking for one of them raises
    NotReady with its reason (503), where an unknown name or version is NotFound (404).
    """

    def __init__(
        self, deployments: Iterable[Deployment], failures: Iterable[LoadFailure] = ()
    ) -> None:
        self._by_name: dict[str, dict[int, Deployment]] = {}
        for deployment in deployments:
            self._by_name.setdefault(deployment.name, {})[deployment.version.version] = deployment
        self._failed: dict[str, list[LoadFailure]] = {}
        for failure in failures:
            self._failed.setdefault(failure.name, []).append(failure)

    def is_ready(self) -> bool:
        """Whether any model serves: one that failed to load does not hold the others back."""
        return bool(self._by_name)

    def model_names(self) -> list[str]:
        return list(self._by_name)

    def deployments(self, name: str) -> list[Deployment]:
        return list(self._versions(name).values())

    def deployment(self, name: str, version: str | None = None) -> Deployment:
        versions = self._by_name.get(name)
        if versions is not None:
            if version is None:
                return next(iter(versions.values()))
            if version.isdigit() and int(version) in versions:
                return versions[int(version)]
        failure = self.failure(name, version)
        if failure is not None:
            raise failure.not_ready()
        if versions is None:
            raise self._unknown(name)
        loaded = ", ".join(str(number) for number in versions)
        raise NotFound(
            f"model {name!r} has no version {version!r} on this server; loaded: {loaded}"
        )

    def failure(self, name: str, version: str | None = None) -> LoadFailure | None:
        """Why ``name`` (``version``, else its default) is not served, when it failed to load;
        None when it serves, or when the server was never asked to serve it."""
        failures = self._failed.get(name)
        if not failures:
            return None
        served = self._by_name.get(name, {})
        if version is None:
            return None if served else failures[0]
        if not version.isdigit() or int(version) in served:
            return None
        return next((f for f in failures if f.number == int(version)), None)

    def fork_unsafe(self) -> list[str]:
        """Versions whose loaded runtime must not be shared by forked workers (CUDA contexts)."""
        return [d.version.ref for d in self._every_deployment() if not d.runtime.fork_safe]

    def served_versions(self) -> list[ModelVersion]:
        """The versions served: what the monitoring jobs compute drift and accuracy of."""
        return [d.version for d in self._every_deployment()]

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
        versions = self._by_name.get(name)
        if versions is not None:
            return versions
        failure = self.failure(name)
        if failure is not None:
            raise failure.not_ready()
        raise self._unknown(name)

    def _unknown(self, name: str) -> NotFound:
        served = ", ".join(self._by_name) or "none"
        return NotFound(f"model {name!r} is not served here; served models: {served}")


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
    """Resolve each reference, load its runtime (verifying the artifact) and wrap it for serving.

    A reference that fails (an unknown alias or version, a corrupt artifact, a missing extra, a
    refused type, under ``require_signed`` a missing or invalid signature, …) does not stop the
    others: it becomes a ``LoadFailure`` of the gateway, logged in one line with its reason.
    When none loads, the error is raised instead (nothing is logged): one message naming each
    reference and its reason, with the first failure's exit code.
    """
    deployments: list[Deployment] = []
    failures: list[LoadFailure] = []
    for ref in refs:
        version: ModelVersion | None = None
        try:
            version = workspace.store.resolve(ref)
            started = time.perf_counter()
            runtime = load_for_serving(workspace, version)
            seconds = time.perf_counter() - started
            deployments.append(Deployment.create(version, runtime, workspace.settings, seconds))
        except Exception as exc:
            failures.append(LoadFailure(ref, exc, version))
            continue
        logger.info("loaded %s (%s) as %s", version.ref, version.framework, ref)
    if failures and not deployments:
        raise _nothing_served(failures)
    for failure in failures:
        logger.error("not serving %s: %s", failure.label, failure.reason)
        if not isinstance(failure.error, DockyardError):
            logger.debug("%s failed to load", failure.label, exc_info=failure.error)
    return LocalGateway(deployments, failures)


def _nothing_served(failures: Sequence[LoadFailure]) -> DockyardError:
    """One error for references none of which loaded; its exit code and HTTP status are the
    first failure's (the CLI exits with it)."""
    if len(failures) == 1:
        message = f"cannot serve {failures[0].label}: {failures[0].reason}"
    else:
        message = "no model can be served: " + "; ".join(
            f"{failure.label}: {failure.reason}" for failure in failures
        )
    error = DockyardError(message)
    first = failures[0].error
    if isinstance(first, DockyardError):
        error.exit_code = first.exit_code
        error.http_status = first.http_status
    error.__cause__ = first
    return error
