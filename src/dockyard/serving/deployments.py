"""A Deployment is one model version being served: its runtime, its batcher, its breaker, its
signature, and the fallback version that answers while its circuit is open."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from dockyard.config import Settings
from dockyard.errors import InvalidInput, PredictionFailed, PredictionTimeout
from dockyard.registry.plans import InputPlan
from dockyard.registry.records import ModelVersion
from dockyard.reliability.isolation import IsolatedRuntime
from dockyard.runtimes.base import Runtime
from dockyard.scaling.ray_runtime import RayRuntime
from dockyard.serving.batching import LOOP_COST_S, Batcher
from dockyard.serving.breaker import Breaker, Ticket

PLATFORMS = {
    "sklearn": "sklearn_skops",
    "onnx": "onnx_onnxv1",
    "xgboost": "xgboost_ubj",
    "lightgbm": "lightgbm_text",
    "torch": "pytorch_torchscript",
    "pyfunc": "python_function",
    "treelite": "treelite_gtil",
}


@dataclass
class Deployment:
    """A loaded model version plus the batcher that feeds it.

    ``input_plan`` checks requests against the version's signature; it is built once, here, so
    requests do not redo the per-signature work.
    """

    version: ModelVersion
    runtime: Runtime
    batcher: Batcher
    breaker: Breaker
    max_rows: int | None = None
    """Most rows one request may carry (the ``max_rows`` setting); None: no limit."""
    load_seconds: float = 0.0
    """How long loading the artifact took (read, verified, deserialized): a metric."""
    fallback: Deployment | None = None
    """The version that answers while this one's circuit is open (``attach_fallback``)."""
    owns_fallback: bool = False
    """Whether the fallback was loaded for this deployment alone (it starts and closes with it),
    rather than being a version the server serves anyway."""
    input_plan: InputPlan = field(init=False, repr=False, compare=False)
    _output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.input_plan = InputPlan(self.version.signature, self.max_rows)
        self._output_names = tuple(spec.name for spec in self.version.signature.outputs)

    @classmethod
    def create(
        cls, version: ModelVersion, runtime: Runtime, settings: Settings, load_seconds: float = 0.0
    ) -> Deployment:
        options = settings.model_options(version.model)
        remote = isinstance(runtime, RayRuntime)
        if options.isolate and not remote:
            runtime = IsolatedRuntime(
                runtime, name=version.ref, timeout_s=options.prediction_timeout_s
            )
        batcher = Batcher(
            runtime.predict,
            name=version.ref,
            max_batch_size=options.max_batch_size,
            max_delay_s=options.max_delay_ms / 1000,
            timeout_s=options.prediction_timeout_s,
            enabled=options.batching,
            # An isolated model's batch waits on a pipe, a Ray replica's on the cluster: never on
            # the event loop, however quick.
            inline_budget_s=0.0 if options.isolate or remote else options.inline_budget_ms / 1000,
            # Splitting waiting requests pays only where the model runs beside the event loop;
            # in this process it would mostly wait for the loop's GIL.
            loop_cost_s=LOOP_COST_S if options.isolate or remote else 0.0,
            # An OpenMP thread count is per thread: the limit `serve` set on the main thread does
            # not reach the model's own, which would otherwise spin one OpenMP thread per core.
            thread_setup=partial(threadpool_limits, limits=settings.effective_model_threads()),
            max_queue=options.max_queue,
            parallel=runtime.parallel if isinstance(runtime, RayRuntime) else 1,
        )
        breaker = Breaker(
            version.ref, failures=options.breaker_failures, reset_s=settings.breaker_reset_s
        )
        return cls(
            version=version,
            runtime=runtime,
            batcher=batcher,
            breaker=breaker,
            max_rows=settings.max_rows,
            load_seconds=load_seconds,
        )

    @property
    def name(self) -> str:
        return self.version.model

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.version.framework, self.version.framework)

    def output_names(self, requested: Sequence[str]) -> tuple[str, ...]:
        """Check requested output names against the signature; none requested means all."""
        known = self._output_names
        for name in requested:
            if name not in known:
                raise InvalidInput(
                    f"unknown output {name!r}; model {self.name!r} produces {', '.join(known)}"
                )
        return tuple(requested)

    def answering(self) -> Deployment:
        """The deployment that answers a request arriving now: this one, or its fallback while
        this one's circuit is open (the answer then names the fallback's version)."""
        fallback = self.fallback
        if fallback is not None and self.breaker.blocks():
            return fallback
        return self

    def attach_fallback(self, fallback: Deployment, *, owned: bool) -> None:
        """Answer with ``fallback`` while this version's circuit is open; ``owned``: it was loaded
        for this alone, so it starts and closes with this deployment."""
        self.fallback = fallback
        self.owns_fallback = owned
        self.breaker.while_open = f"its fallback {fallback.version.ref} answers meanwhile"

    async def infer(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Predict through the batcher, unless the circuit is open (``CircuitOpen`` at once);
        failed predictions count towards opening it, a client's bad input does not."""
        breaker = self.breaker
        ticket = breaker.admit()
        if ticket is Ticket.REFUSED:
            raise breaker.refusal()
        try:
            result = await self.batcher.submit(x, outputs)
        except (PredictionFailed, PredictionTimeout):
            breaker.failed(ticket)
            raise
        except BaseException:
            breaker.released(ticket)
            raise
        breaker.succeeded(ticket)
        return result

    def start(self) -> None:
        """Start what belongs to the serving process itself: an isolated model's child."""
        if isinstance(self.runtime, IsolatedRuntime):
            self.runtime.start()
        if self.fallback is not None and self.owns_fallback:
            self.fallback.start()

    def close(self) -> None:
        self.batcher.close()
        if isinstance(self.runtime, IsolatedRuntime | RayRuntime):
            self.runtime.close()
        if self.fallback is not None and self.owns_fallback:
            self.fallback.close()
