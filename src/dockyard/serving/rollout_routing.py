"""The per-request rollout decision: which version answers a request that names none, and which
one is mirrored (shadow) without ever answering.

Each worker keeps its view of the active rollouts in memory (``RolloutRoutes``, model → Route),
replaced whole by a thread of its own every few seconds from the registry, so a request costs a
dict lookup (and, for a canary, one random number or one CRC of the sticky value): never a
database query. A version the view names but this worker has not loaded yet (the server follows
the registry) is not routed to: the stable version answers meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import Engine

from dockyard.errors import DockyardError
from dockyard.monitoring.metrics import AGREE, DISAGREE, FAILED, WorkerMetrics
from dockyard.registry.records import ModelVersion, Rollout
from dockyard.registry.rollouts import SHADOW, active_rollouts
from dockyard.serving.deployments import Deployment
from dockyard.serving.gateway import Gateway

logger = logging.getLogger(__name__)

SHADOWS_IN_FLIGHT = 64
"""Mirrored requests one worker runs at once; past it a request is not mirrored, so a slow
candidate never piles up memory or work behind the stable one."""
RELATIVE_TOLERANCE = 1e-4
ABSOLUTE_TOLERANCE = 1e-6

ShadowObserver = Callable[[str, int, str, float], object]
"""Told of each mirrored request: model, candidate version, outcome (``AGREE``, ``DISAGREE``,
``FAILED``) and the candidate's seconds (``monitoring.metrics.WorkerMetrics.shadow``)."""

ROUTED: ContextVar[ModelVersion | None] = ContextVar("dockyard_routed", default=None)
"""The version a rollout routed the current request to, so that a failure is counted under the
version that failed (``routed_version``)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One active rollout as a worker applies it."""

    model: str
    stable: int
    candidate: int
    percent: int
    sticky: str | None
    shadow: bool
    salt: bytes
    """The rollout's number: another rollout of the model splits the same users differently."""

    @classmethod
    def of(cls, rollout: Rollout) -> Route:
        return cls(
            rollout.model,
            rollout.stable,
            rollout.candidate,
            rollout.percent,
            rollout.sticky,
            rollout.mode == SHADOW,
            b"%d:" % rollout.id,
        )

    def to_candidate(
        self, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None
    ) -> bool:
        """Whether a canary sends this request to the candidate: ``percent`` in a hundred at
        random, or, sticky, by a hash of the field's value (an input's first element, else a
        request parameter); a request without the field goes to the stable version."""
        if self.sticky is None:
            return random.random() * 100 < self.percent
        value = sticky_value(self.sticky, inputs, parameters)
        if value is None:
            return False
        return zlib.crc32(self.salt + value) % 100 < self.percent


def sticky_value(
    field: str, inputs: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None
) -> bytes | None:
    """The bytes a sticky rollout hashes: the input ``field``'s first element, else the request
    parameter ``field``; None when the request has neither."""
    array = inputs.get(field)
    if array is not None and array.size:
        value = array.flat[0]
        return value if isinstance(value, bytes) else str(value).encode()
    if parameters is not None and field in parameters:
        return str(parameters[field]).encode()
    return None


class RolloutRoutes:
    """A worker's view of the active rollouts (model → Route); ``follow`` keeps it fresh."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._source: Callable[[], Iterable[Rollout]] | None = None
        self._every_s = 2.0
        self._failing = False
        self.observer: ShadowObserver | None = None
        self._shadows: set[asyncio.Task[None]] = set()

    def get(self, model: str) -> Route | None:
        """The route of ``model``'s active rollout, if it has one (the hot path's only cost)."""
        return self._routes.get(model)

    def update(self, rollouts: Iterable[Rollout]) -> None:
        """Replace the view with ``rollouts`` (one assignment: a request sees old or new)."""
        self._routes = {rollout.model: Route.of(rollout) for rollout in rollouts}

    def follow(
        self,
        source: Callable[[], Iterable[Rollout]],
        every_s: float,
        observer: ShadowObserver | None = None,
    ) -> None:
        """Read ``source`` now, and every ``every_s`` while ``refreshing`` runs (a task of the
        app's lifespan); ``observer`` counts the shadow outcomes."""
        self._source = source
        self._every_s = every_s
        self.observer = observer
        self.refresh()

    def refresh(self) -> None:
        """Read the source once; a failure keeps the last view and is logged once until a read
        succeeds again."""
        if self._source is None:
            return
        try:
            self.update(self._source())
        except Exception as exc:  # the registry unreachable a moment: keep routing as before
            if not self._failing:
                logger.warning("cannot read the active rollouts, keeping the last: %s", exc)
            self._failing = True
            return
        self._failing = False

    async def refreshing(self) -> None:
        """Refresh every ``every_s`` (off the event loop) until cancelled."""
        while True:
            await asyncio.sleep(self._every_s)
            await asyncio.to_thread(self.refresh)

    def pick(
        self,
        gateway: Gateway,
        route: Route,
        stable: Deployment,
        inputs: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any] | None,
    ) -> tuple[Deployment, Deployment | None]:
        """The deployment that answers and the one to mirror the request to (shadow), for a
        request naming no version of a model under ``route``."""
        candidate = _loaded(gateway, route)
        if candidate is None:
            return stable, None
        if route.shadow:
            return stable, candidate
        if route.to_candidate(inputs, parameters):
            ROUTED.set(candidate.version)
            return candidate.answering(), None
        ROUTED.set(None)
        return stable, None

    def mirror(
        self,
        candidate: Deployment,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        answered: Mapping[str, np.ndarray],
    ) -> None:
        """Run the request on ``candidate`` in a task of its own and count whether its outputs
        agree with ``answered``; the client's answer never waits for it nor sees it fail."""
        if len(self._shadows) >= SHADOWS_IN_FLIGHT:
            return
        task = asyncio.get_running_loop().create_task(
            self._shadow(candidate, inputs, outputs, answered)
        )
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _shadow(
        self,
        candidate: Deployment,
        inputs: Mapping[str, np.ndarray],
        outputs: tuple[str, ...],
        answered: Mapping[str, np.ndarray],
    ) -> None:
        started = time.perf_counter()
        try:
            x = candidate.input_plan.prepare(inputs)
            got = await candidate.answering().infer(x, outputs)
            outcome = AGREE if agree(answered, got) else DISAGREE
        except Exception as exc:  # the candidate's failure is counted, never the client's
            logger.debug("shadow %s failed: %s", candidate.version.ref, exc)
            outcome = FAILED
        observer = self.observer
        if observer is not None:
            version = candidate.version
            observer(version.model, version.version, outcome, time.perf_counter() - started)


def agree(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> bool:
    """Whether every output of ``expected`` is in ``got`` with the same shape and values:
    numbers within a small relative tolerance (NaN equals NaN), anything else exactly."""
    for name, want in expected.items():
        have = got.get(name)
        if have is None or np.shape(have) != np.shape(want):
            return False
        want_array, have_array = np.asarray(want), np.asarray(have)
        if want_array.dtype.kind in "biuf" and have_array.dtype.kind in "biuf":
            close = np.allclose(
                have_array,
                want_array,
                rtol=RELATIVE_TOLERANCE,
                atol=ABSOLUTE_TOLERANCE,
                equal_nan=want_array.dtype.kind == "f",
            )
            if not close:
                return False
        elif not np.array_equal(have_array, want_array):
            return False
    return True


def routed_version(name: str, number: str | None) -> ModelVersion | None:
    """The version a rollout routed the current request for ``name`` to, if it did: what a
    failed request is counted under."""
    routed = ROUTED.get()
    if routed is None or number is not None or routed.model != name:
        return None
    return routed


def failed_version(gateway: Gateway, name: str, number: str | None) -> ModelVersion | None:
    """The version a failed request is counted under: the one that would have answered it (a
    rollout's candidate that failed), none for a model or version not served here. The REST
    hot path and the gRPC service both count failures with it."""
    version = routed_version(name, number)
    if version is None:
        try:
            version = gateway.deployment(name, number).version
        except DockyardError:
            version = None
    return version


def _loaded(gateway: Gateway, route: Route) -> Deployment | None:
    """The candidate's deployment, when this worker has loaded it."""
    try:
        return gateway.deployment(route.model, str(route.candidate))
    except DockyardError:
        return None


ROUTES = RolloutRoutes()
"""This process's view: the inference coroutines read it; ``follow_rollouts`` keeps it fresh."""


def follow_rollouts(engine: Engine, every_s: float, metrics: WorkerMetrics | None) -> None:
    """Keep this process's view fresh from the registry at ``engine`` (the app's composition, in
    each worker); the shadow outcomes are counted in ``metrics`` when it is on."""
    observer = None if metrics is None else metrics.shadow
    ROUTES.follow(partial(active_rollouts, engine), every_s, observer)
