"""Following the registry: a running server serves what the registry says within seconds.

Every alias move, promotion and rollout step appends an audit entry in its own transaction, from
whichever process or machine shares the registry; the audit head's number is one row. A
``Follower`` reads that row every ``follow_interval_s`` and only when it moved resolves what the
server must hold again (``holdings.held_versions``), loads and warms what it does not hold yet, and
gives the new set. A version that fails to load or warm is not served: the reference keeps the
version it served before, and the failure is reported (logged once, in the gateway's failures).

With one worker, ``LoopFollower`` runs this as a task of the worker's event loop (loading on a
thread) and swaps the gateway's set in place; the versions no longer served finish their
in-flight requests (``drain_timeout_s``) and are closed. With several, the supervisor asks
``Follower.next_generation`` and replaces its workers one at a time (``reliability.supervisor``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dockyard.monitoring.metrics import Served
from dockyard.monitoring.monitor import Monitor
from dockyard.registry.audit import read_head
from dockyard.registry.records import ModelVersion
from dockyard.registry.refs import ModelRef
from dockyard.services.workspace import Workspace
from dockyard.serving.deployments import Deployment
from dockyard.serving.fallbacks import attach_fallbacks
from dockyard.serving.gateway import (
    LoadFailure,
    LocalGateway,
    WarmCheck,
    load_deployment,
    log_failure,
    open_runtime,
)
from dockyard.serving.holdings import Holdings, held_versions
from dockyard.serving.warmup import warm_here

logger = logging.getLogger(__name__)

Key = tuple[str, int]
DRAIN_POLL_S = 0.05
BODY_GRACE_S = 1.0
"""A request that found the old version may still be reading its body when the swap happens:
a retired version waits this long before it counts its in-flight requests as done."""


@dataclass(frozen=True)
class Change:
    """What must change: the versions to load now (not held, never failed before)."""

    holdings: Holdings
    to_load: list[tuple[ModelRef, ModelVersion]]


class Follower:
    """Knows what the server holds per reference, and what the registry says it should."""

    def __init__(self, workspace: Workspace, refs: Sequence[ModelRef] | None) -> None:
        """``refs`` as ``serve`` was given them; None: every model's ``production`` alias."""
        self._workspace = workspace
        self._refs = refs
        self._head: int | None = None
        self._by_ref: dict[ModelRef, Key] = {}
        """The version each reference was last served as."""
        self._failed: dict[Key, LoadFailure] = {}
        """Versions that failed to load or warm: reported, never tried again."""

    @property
    def workspace(self) -> Workspace:
        return self._workspace

    def moved(self) -> bool:
        """Whether the audit head moved since the last call (the first call only reads it)."""
        with self._workspace.store.engine.connect() as connection:
            head = read_head(connection)
        seq = head[0] if head is not None else 0
        moved = self._head is not None and seq != self._head
        self._head = seq
        return moved

    def started(self, gateway: LocalGateway) -> None:
        """Record what start-up loaded: each reference's version, and the failures."""
        held = gateway.held()
        for failure in gateway.failures():
            if failure.version is not None:
                self._failed[(failure.name, failure.version.version)] = failure
        holdings = held_versions(self._workspace, self._refs)
        for ref, version in holdings.versions:
            if (version.model, version.version) in held:
                self._by_ref[ref] = (version.model, version.version)

    def change(self, held: dict[Key, Deployment]) -> Change:
        """What the registry names now, and which of its versions must be loaded."""
        holdings = held_versions(self._workspace, self._refs)
        to_load = [
            (ref, version)
            for ref, version in holdings.versions
            if (key := (version.model, version.version)) not in held and key not in self._failed
        ]
        return Change(holdings, to_load)

    def assemble(
        self,
        change: Change,
        held: dict[Key, Deployment],
        loaded: dict[Key, Deployment],
        failed: Sequence[LoadFailure],
    ) -> tuple[list[Deployment], list[LoadFailure]]:
        """The set to serve: each reference's new version when it is held or was loaded, else
        the version it served before (which keeps serving); and every failure to report."""
        for failure in failed:
            assert failure.version is not None
            self._failed[(failure.name, failure.version.version)] = failure
            log_failure(failure)
        available = {**held, **loaded}
        deployments: dict[Key, Deployment] = {}
        by_ref: dict[ModelRef, Key] = {}
        for ref, version in change.holdings.versions:
            key = (version.model, version.version)
            if key not in available:
                key = self._by_ref.get(ref, key)
            if key in available:
                deployments.setdefault(key, available[key])
                by_ref[ref] = key
        for ref, _ in change.holdings.unresolved:
            previous = self._by_ref.get(ref)
            if previous is not None and previous in available:  # an alias gone: keep serving
                deployments.setdefault(previous, available[previous])
                by_ref[ref] = previous
        self._by_ref = by_ref
        failures = [LoadFailure(ref, error) for ref, error in change.holdings.unresolved]
        named = change.holdings.keys()  # a failed version the registry no longer names is moot
        failures += [failure for key, failure in self._failed.items() if key in named]
        return list(deployments.values()), failures

    def next_generation(self, gateway: LocalGateway, warm: WarmCheck) -> LocalGateway | None:
        """For the supervisor: a new gateway when the registry moved and the set it names differs
        from ``gateway``'s (loaded and warmed here, on this thread); None when nothing changes.
        The versions both serve are the same objects (loaded once, shared by every worker)."""
        if not self.moved():
            return None
        held = gateway.held()
        change = self.change(held)
        loaded: dict[Key, Deployment] = {}
        failed: list[LoadFailure] = []
        for ref, version in change.to_load:
            try:
                loaded[(version.model, version.version)] = load_deployment(
                    self._workspace, version, warm
                )
            except Exception as exc:
                failed.append(LoadFailure(ref, exc, version))
            else:
                logger.info("loaded %s (%s) as %s", version.ref, version.framework, ref)
        workspace = self._workspace
        attach_fallbacks(workspace, loaded.values(), lambda v: load_deployment(workspace, v, warm))
        deployments, failures = self.assemble(change, held, loaded, failed)
        if [(d.name, d.version.version) for d in deployments] == list(held) and not failed:
            return None
        return LocalGateway(deployments, failures)

    def served_versions(self) -> list[ModelVersion]:
        """The versions the registry names for this server now (the monitoring process's view of
        what is served: it follows the registry the same way)."""
        return [version for _, version in held_versions(self._workspace, self._refs).versions]


class LoopFollower:
    """Follows the registry on a worker's event loop (a server with one worker)."""

    def __init__(
        self, follower: Follower, gateway: LocalGateway, interval_s: float, drain_timeout_s: float
    ) -> None:
        self._follower = follower
        self._gateway = gateway
        self._interval_s = interval_s
        self._drain_timeout_s = drain_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._draining: set[asyncio.Task[None]] = set()
        self.on_loaded: Callable[[Deployment], None] | None = None

    def start(self, monitor: Monitor) -> None:
        """Start following (in the app's lifespan); new versions are counted by ``monitor``."""
        metrics = monitor.metrics
        if metrics is not None:
            self.on_loaded = lambda d: metrics.watch(Served(d.version, d.load_seconds), d.batcher)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop following; the versions still draining are closed at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._draining):
            task.cancel()
        await asyncio.gather(*self._draining, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.follow_once()
            except Exception:  # the registry unreachable a moment: keep serving, try again
                logger.exception("following the registry failed; serving what is loaded")

    async def follow_once(self) -> None:
        """One poll: when the registry moved, load what it names and swap it in."""
        follower, gateway = self._follower, self._gateway
        if not await asyncio.to_thread(follower.moved):
            return
        held = gateway.held()
        change = await asyncio.to_thread(follower.change, held)
        gateway.loading(version.model for _, version in change.to_load)
        loaded: dict[Key, Deployment] = {}
        failed: list[LoadFailure] = []
        try:
            for ref, version in change.to_load:
                try:
                    deployment = await self._load(version)
                except Exception as exc:
                    failed.append(LoadFailure(ref, exc, version))
                    continue
                loaded[(version.model, version.version)] = deployment
                logger.info("loaded %s (%s) as %s", version.ref, version.framework, ref)
            workspace = follower.workspace
            await asyncio.to_thread(
                attach_fallbacks,
                workspace,
                list(loaded.values()),
                lambda v: load_deployment(workspace, v, warm_here),
            )
        finally:
            gateway.loading(())
        deployments, failures = follower.assemble(change, held, loaded, failed)
        for deployment in loaded.values():
            if self.on_loaded is not None:
                self.on_loaded(deployment)
        retired = gateway.replace(deployments, failures)
        for deployment in [*retired, *(d for d in loaded.values() if d not in deployments)]:
            logger.info("%s is no longer served: draining it", deployment.version.ref)
            task = asyncio.get_running_loop().create_task(self._drain(deployment))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def _load(self, version: ModelVersion) -> Deployment:
        """Verify and deserialize (or deploy on Ray) on a thread; wrap for serving here (the
        batcher is built on the event loop's thread, where its time limit on inline batches
        works); warm on a thread."""
        workspace = self._follower.workspace
        started = time.perf_counter()
        runtime = await asyncio.to_thread(open_runtime, workspace, version)
        seconds = time.perf_counter() - started
        deployment = Deployment.create(version, runtime, workspace.settings, seconds)
        try:
            deployment.start()
            await asyncio.to_thread(warm_here, deployment)
        except BaseException:
            deployment.close()
            raise
        return deployment

    async def _drain(self, deployment: Deployment) -> None:
        """Close ``deployment`` once its in-flight requests are answered (at most
        ``drain_timeout_s``)."""
        deadline = time.monotonic() + self._drain_timeout_s
        try:
            await asyncio.sleep(min(BODY_GRACE_S, self._drain_timeout_s))
            while deployment.batcher.in_flight and time.monotonic() < deadline:
                await asyncio.sleep(DRAIN_POLL_S)
        finally:
            deployment.close()
