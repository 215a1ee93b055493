"""One worker's monitoring, fed by the hot path: request metrics, the prediction log, traces.

The hot path calls ``observe`` once per inference request, after the answer is sent. Both parts
only record in memory there (a few dictionary updates; a reference appended to a bounded queue);
their writers run off the hot path (``start``/``close``, from the app's lifespan). The traces
(``monitoring.tracing``), when on, wrap the request instead, and their exporter starts and stops
with the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from dockyard.config import Settings
from dockyard.home import Home
from dockyard.monitoring.metrics import WorkerMetrics, metrics_folder

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy import Engine

    from dockyard.monitoring.predlog import PredictionLog, Protect
    from dockyard.monitoring.tracing import Traces
    from dockyard.registry.records import ModelVersion


class Monitor:
    """Metrics, the prediction log and traces of one worker process; each may be off (None)."""

    def __init__(
        self,
        metrics: WorkerMetrics | None,
        log: PredictionLog | None,
        traces: Traces | None = None,
    ) -> None:
        self.metrics = metrics
        self.log = log
        self.traces = traces
        if metrics is not None and log is not None:
            metrics.watch_log(log)

    @classmethod
    def for_worker(
        cls,
        settings: Settings,
        home: Home,
        server: str,
        engine: Engine | None,
        protect: Protect | None = None,
    ) -> Monitor:
        """The monitoring ``settings`` ask for (``metrics``, ``prediction_log``), in this worker
        of server ``server`` (its workers share a metrics folder named after it); ``engine``: the
        registry's, for the gauges read from its tables; ``protect``: what the log's rows pass
        through before they are written (the personal-data rules). The prediction log's writer
        (pyarrow) is imported only when the log is on, OpenTelemetry only when traces are."""
        metrics = WorkerMetrics(metrics_folder(home, server), engine) if settings.metrics else None
        log = None
        if settings.prediction_log:
            from dockyard.monitoring.predlog import PredictionLog

            log = PredictionLog.for_worker(settings, home, protect)
        traces = None
        if settings.traces:
            from dockyard.monitoring.tracing import Traces

            traces = Traces.for_worker(settings)
        return cls(metrics, log, traces)

    def observe(
        self,
        route: str,
        model: str,
        version: ModelVersion | None,
        status: int,
        seconds: float,
        error: str | None,
        request_id: str,
        principal: str,
        inputs: Mapping[str, np.ndarray] | None,
        outputs: Mapping[str, np.ndarray] | None,
    ) -> None:
        """One inference request: ``route`` ("v2", "v1" or "grpc"), the model as named in the
        path, the version that answered (None when none did: unknown model, refused before it),
        the status sent, the seconds from the request's arrival to its answer, the error class
        name (None on success), and, on success, the request's tensors as decoded and the
        model's outputs."""
        if self.metrics is not None:
            self.metrics.request(
                route, model, None if version is None else version.version, status, seconds, error
            )
        if self.log is not None and version is not None and inputs is not None:
            assert outputs is not None
            self.log.append(version, request_id, principal, seconds, inputs, outputs)

    async def start(self) -> None:
        """Start the background writers (in the worker process, from the app's lifespan); the
        log's first, as it forks its writer process before any thread of ours exists."""
        if self.log is not None:
            await self.log.start()
        if self.metrics is not None:
            await self.metrics.start()
        if self.traces is not None:
            self.traces.start()

    async def close(self) -> None:
        """Flush and stop the writers: a graceful stop loses nothing recorded."""
        if self.log is not None:
            await self.log.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.traces is not None:
            await self.traces.close()
