"""The Gateway: where the routes find the deployment for a model name and optional version.

``LocalGateway`` serves deployments in this process; a following server (``serving.follow``)
replaces the set it serves in one step, so a request sees the old set or the new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from dockyard.errors import DockyardError, NotFound, NotReady
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import ModelRef
from dockyard.runtimes.base import Runtime
from dockyard.scaling.ray_runtime import RayRuntime
from dockyard.services.signatures import load_for_serving
from dockyard.services.workspace import Workspace
from dockyard.serving.deployments import Deployment
from dockyard.serving.fallbacks import attach_fallbacks
from dockyard.serving.holdings import Holdings, held_versions

WarmCheck = Callable[[Deployment], None]
"""Warms a deployment just loaded (``serving.warmup``); raises when it cannot predict."""

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
        self._failed: dict[str, list[LoadFailure]] = {}
        self._loading: frozenset[str] = frozenset()
        self.replace(deployments, failures)

    def is_ready(self) -> bool:
        """Whether any model serves and none is loading that does not serve yet: one that failed
        to load does not hold the others back."""
        return bool(self._by_name) and not self._loading

    def replace(
        self, deployments: Iterable[Deployment], failures: Iterable[LoadFailure] = ()
    ) -> list[Deployment]:
        """Serve ``deployments`` from now on (each model's first one is its default) and report
        ``failures``; returns the deployments no longer served, for the caller to drain and
        close. The new tables are built aside and put in place by two assignments with nothing
        between them, so a request on this event loop sees the old set or the new one."""
        by_name: dict[str, dict[int, Deployment]] = {}
        for deployment in deployments:
            by_name.setdefault(deployment.name, {})[deployment.version.version] = deployment
        failed: dict[str, list[LoadFailure]] = {}
        for failure in failures:
            failed.setdefault(failure.name, []).append(failure)
        kept = {id(d) for versions in by_name.values() for d in versions.values()}
        retired = [d for d in self._every_deployment() if id(d) not in kept]
        self._by_name, self._failed = by_name, failed
        self._loading = self._loading - by_name.keys()
        return retired

    def loading(self, names: Iterable[str]) -> None:
        """Models being loaded that do not serve yet: not ready (nor is the server) until a
        ``replace`` serves them or ``loading(())`` gives up on them."""
        self._loading = frozenset(name for name in names if name not in self._by_name)

    def held(self) -> dict[tuple[str, int], Deployment]:
        """Every deployment served, by ``(model, version)``: what a new set can keep."""
        return {(d.name, d.version.version): d for d in self._every_deployment()}

    def failures(self) -> list[LoadFailure]:
        return [failure for failures in self._failed.values() for failure in failures]

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
            if name in self._loading:
                raise NotReady(f"model {name!r} is loading")
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
        if name in self._loading:
            raise NotReady(f"model {name!r} is loading")
        raise self._unknown(name)

    def _unknown(self, name: str) -> NotFound:
        served = ", ".join(self._by_name) or "none"
        return NotFound(f"model {name!r} is not served here; served models: {served}")


def build_local_gateway(
    workspace: Workspace, refs: Sequence[ModelRef] | None, warm: WarmCheck | None = None
) -> LocalGateway:
    """Resolve the references (None: every model's ``production`` alias) and the candidates of
    their models' active rollouts (``held_versions``), load each version (verifying the artifact),
    warm it with ``warm`` and wrap it for serving.

    A version that fails (an unknown alias or version, a corrupt artifact, a missing extra, a
    refused type, under ``require_signed`` a missing or invalid signature, a failed warm-up, …)
    does not stop the others: it becomes a ``LoadFailure`` of the gateway, logged in one line with
    its reason. When none loads, the error is raised instead (nothing is logged): one message
    naming each reference and its reason, with the first failure's exit code.
    """
    deployments, failures = load_holdings(workspace, held_versions(workspace, refs), {}, warm)
    if failures and not deployments:
        raise _nothing_served(failures)
    for failure in failures:
        log_failure(failure)
    attach_fallbacks(workspace, deployments, lambda v: load_deployment(workspace, v, warm))
    return LocalGateway(deployments, failures)


def load_holdings(
    workspace: Workspace,
    holdings: Holdings,
    held: dict[tuple[str, int], Deployment],
    warm: WarmCheck | None,
) -> tuple[list[Deployment], list[LoadFailure]]:
    """The deployments of ``holdings``: those in ``held`` kept as they are, the others loaded
    (and warmed); a reference that does not resolve or a version that does not load is a
    failure."""
    deployments: list[Deployment] = []
    failures = [LoadFailure(ref, error) for ref, error in holdings.unresolved]
    for ref, version in holdings.versions:
        kept = held.get((version.model, version.version))
        if kept is not None:
            deployments.append(kept)
            continue
        try:
            deployments.append(load_deployment(workspace, version, warm))
        except Exception as exc:
            failures.append(LoadFailure(ref, exc, version))
            continue
        logger.info("loaded %s (%s) as %s", version.ref, version.framework, ref)
    failures.sort(key=lambda failure: holdings.refs.index(failure.ref))
    return deployments, failures


def load_deployment(
    workspace: Workspace, version: ModelVersion, warm: WarmCheck | None = None
) -> Deployment:
    """Load ``version`` (verified, deserialized), wrap it for serving and warm it with ``warm``;
    raises what stopped it (nothing is left open then)."""
    started = time.perf_counter()
    runtime = open_runtime(workspace, version)
    seconds = time.perf_counter() - started
    deployment = Deployment.create(version, runtime, workspace.settings, seconds)
    if warm is not None:
        try:
            warm(deployment)
        except BaseException:
            deployment.close()
            raise
    return deployment


def open_runtime(workspace: Workspace, version: ModelVersion) -> Runtime:
    """``version``'s runtime on the configured backend: loaded here (verified, deserialized),
    or, with the ``ray`` backend, deployed as (or found running as) a Ray Serve application."""
    if workspace.settings.backend == "ray":
        return RayRuntime.deploy(workspace.settings, version)
    return load_for_serving(workspace, version)


def log_failure(failure: LoadFailure) -> None:
    """One line for a version not served, with the traceback at debug level for a foreign error."""
    logger.error("not serving %s: %s", failure.label, failure.reason)
    if not isinstance(failure.error, DockyardError):
        logger.debug("%s failed to load", failure.label, exc_info=failure.error)


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
