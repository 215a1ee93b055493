"""The per-request rollout decision on real deployments: a canary's share close to its percent,
sticky values always on one arm, a candidate not loaded yet never routed to, and a shadow that is
never answered with and whose failure never reaches the client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from dockyard.config import load_settings
from dockyard.registry.records import Rollout
from dockyard.registry.refs import parse_ref
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.gateway import LocalGateway, build_local_gateway
from dockyard.serving.rollout_routing import (
    ROUTED,
    RolloutRoutes,
    Route,
    agree,
    routed_version,
)

SOURCE = """
def stable(x):
    return {"score": x.sum(axis=1)}


def same(x):
    return {"score": x.sum(axis=1) + 1e-9}


def other(x):
    return {"score": x.sum(axis=1) + 1.0}


def broken(x):
    if (x[:, 0] > 100).any():
        raise ValueError("too big")
    return {"score": x.sum(axis=1)}
"""
REQUESTS = 20_000
NO_INPUTS: dict[str, np.ndarray] = {}


def _rollout(
    candidate: int, mode: str = "canary", percent: int = 30, sticky: str | None = None
) -> Rollout:
    now = datetime.now(UTC)
    return Rollout(7, "m", "staging", 1, candidate, mode, percent, "active", "alice", now, sticky)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalGateway]:
    """``m`` 1 (stable), 2 (agrees within tolerance), 3 (disagrees), 4 (fails past 100)."""
    root = tmp_path_factory.mktemp("routing")
    code = root / "code"
    code.mkdir()
    (code / "scorer.py").write_text(SOURCE)
    workspace = Workspace.open(load_settings({"home": root / "home"}, env={}))
    reference = np.ones((10, 2))
    for entrypoint in ("stable", "same", "other", "broken"):
        request = Registration("m", reference_data=reference, entrypoint=f"scorer:{entrypoint}")
        register(workspace, Path(code), request)
    refs = [parse_ref(f"m:{number}") for number in (1, 2, 3, 4)]
    served = build_local_gateway(workspace, refs)
    yield served
    served.close()
    workspace.store.close()


def test_a_canary_takes_close_to_its_percent() -> None:
    route = Route.of(_rollout(2, percent=30))

    taken = sum(route.to_candidate(NO_INPUTS, None) for _ in range(REQUESTS))

    assert 0.28 < taken / REQUESTS < 0.32


def test_a_sticky_value_always_takes_the_same_arm_and_values_split_by_percent() -> None:
    route = Route.of(_rollout(2, percent=20, sticky="user"))
    users = [f"user-{number}" for number in range(2000)]

    first = {user: route.to_candidate(NO_INPUTS, {"user": user}) for user in users}
    again = {user: route.to_candidate(NO_INPUTS, {"user": user}) for user in users}
    by_input = route.to_candidate({"user": np.array([b"user-7", b"x"], dtype=object)}, None)

    assert first == again
    assert 0.16 < sum(first.values()) / len(users) < 0.24
    assert by_input == first["user-7"]
    assert not any(route.to_candidate(NO_INPUTS, {"other": u}) for u in users[:200])


def test_a_candidate_that_is_not_loaded_is_never_routed_to(gateway: LocalGateway) -> None:
    routes = RolloutRoutes()
    routes.update([_rollout(9, percent=99)])
    route = routes.get("m")
    assert route is not None
    stable = gateway.deployment("m", "1")

    picked = {
        routes.pick(gateway, route, stable, NO_INPUTS, None)[0].version.version for _ in range(200)
    }

    assert picked == {1}


def test_the_canary_arm_is_remembered_for_the_failure_count(gateway: LocalGateway) -> None:
    routes = RolloutRoutes()
    routes.update([_rollout(2, percent=50)])  # both arms in 300 picks: 1 - 2^-299
    route = routes.get("m")
    assert route is not None
    stable = gateway.deployment("m", "1")
    arms: set[int] = set()
    for _ in range(300):
        answering, shadow = routes.pick(gateway, route, stable, NO_INPUTS, None)
        arms.add(answering.version.version)
        assert shadow is None
        routed = routed_version("m", None)
        assert (routed.version if routed else 1) == answering.version.version
        assert routed_version("m", "1") is None
    ROUTED.set(None)

    assert arms == {1, 2}
    routes.update([])
    assert routes.get("m") is None


@pytest.mark.parametrize(
    ("candidate", "first", "outcome"),
    [(2, 1.0, "agree"), (3, 1.0, "disagree"), (4, 500.0, "failed")],
    ids=["agree", "disagree", "failed"],
)
def test_a_shadow_is_compared_and_counted_never_answered(
    gateway: LocalGateway, candidate: int, first: float, outcome: str
) -> None:
    routes = RolloutRoutes()
    seen: list[tuple[str, int, str]] = []
    routes.observer = lambda model, version, result, _: seen.append((model, version, result))
    routes.update([_rollout(candidate, mode="shadow", percent=100)])
    route = routes.get("m")
    assert route is not None
    stable = gateway.deployment("m", "1")
    inputs = {"input-0": np.array([[first, 2.0]])}

    async def request() -> dict[str, np.ndarray]:
        answering, shadow = routes.pick(gateway, route, stable, inputs, None)
        assert answering is stable
        assert shadow is not None
        result = await answering.infer(answering.input_plan.prepare(inputs), ())
        routes.mirror(shadow, inputs, (), result)
        await asyncio.sleep(0)
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        return result

    gateway.start()
    answer = asyncio.run(request())

    assert answer["score"].tolist() == [first + 2.0]
    assert seen == [("m", candidate, outcome)]


def test_outputs_agree_within_a_small_tolerance_and_exactly_otherwise() -> None:
    base = {"score": np.array([1.0, np.nan]), "label": np.array(["a", "b"], dtype=object)}

    assert agree(base, {"score": np.array([1.0 + 1e-7, np.nan]), "label": base["label"]})
    assert not agree(base, {"score": np.array([1.01, np.nan]), "label": base["label"]})
    assert not agree(base, {"score": base["score"], "label": np.array(["a", "c"], dtype=object)})
    assert not agree(base, {"score": base["score"]})
    assert not agree(base, {"score": np.array([1.0]), "label": base["label"]})
