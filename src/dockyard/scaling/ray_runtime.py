"""A runtime whose predictions run on Ray Serve replicas: the ``ray`` backend's model.

The serving process keeps everything of the local backend (routes, auth, metrics, the prediction
log, rollouts, swaps) and its adaptive batcher; only the batch's ``predict`` goes to a replica,
through a Ray Serve deployment handle. Ray's HTTP proxy is not on the path: on the 2-core
reference machine it answered 42 requests/s at 64 connections, with time-outs, where one handle
call per batch keeps up with the serving process. ``parallel`` batches may be in flight at once
(the batcher runs that many model threads), so several replicas work at the same time and Ray's
autoscaler sees the load.

An application already running under the version's name (another serving process's, or one
deployed from ``dockyard export ray``) is used as it is and left running; one this process
deployed is deleted when it stops serving the version.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from dockyard.config import Settings
from dockyard.errors import DockyardError, PredictionFailed, PredictionTimeout, Unavailable
from dockyard.registry.records import ModelVersion
from dockyard.scaling import ray_cluster
from dockyard.scaling.ray_replica import application, application_name

logger = logging.getLogger(__name__)

RETRIES = 2
"""A batch whose replica died under it (killed, its node lost) is sent again this many times: a
prediction has no side effect, and Ray Serve routes the retry to a live replica."""
RUNNING, DEPLOYING, FAILED = "RUNNING", "DEPLOYING", "DEPLOY_FAILED"
IN_USE = frozenset({RUNNING, DEPLOYING, "UNHEALTHY"})
"""An application in these states is someone's (another server's, an export's): used, not
redeployed, and never deleted by this server."""
POLL_S = 0.2
ERROR_LINE = re.compile(r"^(?:[\w.]+\.)?\w*(?:Error|Exception|Corrupt|Extra|Invalid\w*)\b: ")
"""A traceback's last line: ``ArtifactCorrupt: the artifact of …``."""


class RayRuntime:
    """The replicas of one model version, seen as a runtime by the serving process."""

    fork_safe = False  # a process joined to Ray cannot be forked into workers

    def __init__(
        self, version: ModelVersion, handle: Any, *, owned: bool, parallel: int, timeout_s: float
    ) -> None:
        self.framework = version.framework
        self.output_names = tuple(spec.name for spec in version.signature.outputs)
        self.app = application_name(version.model, version.version)
        self.parallel = parallel
        """Batches the serving process may have in flight at once (its batcher's threads)."""
        self.owned = owned
        self._handle = handle
        self._timeout_s = timeout_s

    @classmethod
    def deploy(cls, settings: Settings, version: ModelVersion) -> RayRuntime:
        """Join the cluster, deploy ``version``'s application unless it runs already, and wait
        until its replicas are up (a replica that cannot load the version fails this, naming
        why)."""
        serve = ray_cluster.join(settings)
        options = settings.model_options(version.model)
        name = application_name(version.model, version.version)
        existing = _app_status(serve, name)
        owned = existing not in IN_USE
        if existing == DEPLOYING:  # another server's, starting: wait for it, do not redeploy
            _wait_running(serve, name, version, settings.ray_deploy_timeout_s)
        if owned:
            started = time.perf_counter()
            try:
                serve._run(  # serve.run's own wait has no deadline (a replica Ray cannot place)
                    application(settings, version.model, version.version),
                    name=name,
                    route_prefix=None,
                    _blocking=False,
                )
                _wait_running(serve, name, version, settings.ray_deploy_timeout_s)
            except BaseException:
                _delete(serve, name)
                raise
            logger.info(
                "deployed %s on Ray as %s in %.1f s",
                version.ref,
                name,
                time.perf_counter() - started,
            )
        else:
            logger.info("using the Ray application %s already running for %s", name, version.ref)
        parallel = max(2, round(options.max_replicas * options.target_ongoing_requests))
        return cls(
            version,
            serve.get_app_handle(name),
            owned=owned,
            parallel=parallel,
            timeout_s=options.prediction_timeout_s,
        )

    def predict(self, x: Any, outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """Predict one batch on a replica (on one of the batcher's threads: it waits)."""
        from ray import exceptions

        for attempt in range(RETRIES + 1):
            try:
                result: dict[str, np.ndarray] = self._handle.predict.remote(
                    x, tuple(outputs)
                ).result(timeout_s=self._timeout_s)
                return result
            except exceptions.RayTaskError as exc:
                cause = exc.cause
                if isinstance(cause, DockyardError):
                    raise cause from None
                raise PredictionFailed(
                    f"{self.framework} model failed to predict: {type(cause).__name__}"
                ) from None
            except TimeoutError:
                raise PredictionTimeout(
                    f"the Ray replicas of {self.app} did not answer within {self._timeout_s:g} s"
                ) from None
            except (exceptions.RayActorError, exceptions.ActorUnavailableError) as exc:
                if attempt == RETRIES:
                    raise Unavailable(
                        f"the Ray replicas of {self.app} are unavailable: {type(exc).__name__}"
                    ) from None
                logger.warning(
                    "a replica of %s failed (%s); sending the batch again", self.app, exc
                )
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Delete the application if this process deployed it (another's is left running)."""
        if self.owned:
            from ray import serve

            _delete(serve, self.app)


def _app_status(serve: Any, name: str) -> str:
    """The status of application ``name`` (``RUNNING``, ``DEPLOYING``, …); empty when absent."""
    status = serve.status().applications.get(name)
    return "" if status is None else str(status.status.value)


def _wait_running(serve: Any, name: str, version: ModelVersion, timeout_s: float) -> None:
    """Wait until application ``name`` runs; raise naming why it failed, or what it waits for."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(name)
        state = "" if status is None else str(status.status.value)
        if state == RUNNING:
            return
        if state == FAILED:  # the replica's traceback is in its deployment's message
            messages = [status.message, *(d.message for d in status.deployments.values())]
            raise _deploy_failure(version, "\n".join(messages))
        if time.monotonic() > deadline:
            waiting = (
                "; ".join(
                    f"{d.status.value}: {d.message}"
                    for d in status.deployments.values()
                    if d.message
                )
                if status is not None
                else ""
            )
            raise Unavailable(
                f"cannot deploy {version.ref} on Ray: not running after {timeout_s:g} s "
                f"(ray_deploy_timeout_s){': ' + waiting if waiting else ''}"
            )
        time.sleep(POLL_S)


def _delete(serve: Any, name: str) -> None:
    try:
        serve.delete(name, _blocking=False)
    except Exception as exc:  # the cluster may be gone already at shutdown
        logger.warning("could not delete the Ray application %s: %s", name, exc)


def _deploy_failure(version: ModelVersion, message: str) -> DockyardError:
    """A failed deployment in one line: the last line of the replica's traceback that names an
    exception (``ArtifactCorrupt: …``), with Ray's own wrapping left out."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    reason = next((line for line in reversed(lines) if ERROR_LINE.match(line)), "")
    return Unavailable(f"cannot deploy {version.ref} on Ray: {reason or 'its replicas failed'}")
