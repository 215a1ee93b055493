"""Rate limits: token-bucket arithmetic on a clock the test moves, which limit a principal is held
to, the ``rate_limits`` setting's errors, and the anomaly detector's one event per jump."""

from __future__ import annotations

import asyncio
import timeit
from datetime import UTC, datetime

import pytest

from dockyard.config import load_settings
from dockyard.errors import InvalidInput, RateLimited
from dockyard.security.apikeys import KeyRecord
from dockyard.security.events import RATE_ANOMALY
from dockyard.security.principals import Action, Principal, Role, local_user
from dockyard.security.ratelimit import (
    COOLDOWN_S,
    WARMUP_WINDOWS,
    WINDOW_S,
    RateLimits,
    parse_limits,
)
from dockyard.services.workspace import Workspace
from dockyard.serving.auth import Authenticator, authenticator_for

BOT = Principal("bot", Role.PREDICTOR, key_id="a1b2c3d4e5f6")
OTHER_BOT = Principal("other", Role.PREDICTOR, key_id="0123456789ab")
ADMIN = Principal("admin", Role.ADMIN, key_id="ffffffffffff")
PERSON = Principal("alice", Role.PREDICTOR, kind="jwt")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(principal: Principal, rate: str | None) -> KeyRecord:
    return KeyRecord(
        key_id=principal.key_id,
        name=principal.name,
        role=principal.role,
        models=None,
        hash="00",
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
        created_by="test",
        rate=rate,
    )


def admitted(limits: RateLimits, principal: Principal, requests: int) -> int:
    """How many of ``requests`` at the same instant pass."""
    passed = 0
    for _ in range(requests):
        try:
            limits.admit(principal)
            passed += 1
        except RateLimited:
            pass
    return passed


def test_a_bucket_holds_one_seconds_worth_and_refills_continuously() -> None:
    clock = Clock()
    limits = RateLimits.from_settings(["predictor=5/s"], clock=clock)

    assert admitted(limits, BOT, 20) == 5  # the full bucket: a burst of one second's worth
    with pytest.raises(RateLimited) as refused:
        limits.admit(BOT)
    assert refused.value.retry_after == pytest.approx(0.2)
    assert "key a1b2c3d4e5f6 is over its rate limit of 5/s (rate_limits predictor=5/s)" in str(
        refused.value
    )
    assert refused.value.http_status == 429

    clock.now += 0.1  # half a token: still refused, and it says how long to wait
    with pytest.raises(RateLimited) as refused:
        limits.admit(BOT)
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.now += 0.1
    assert admitted(limits, BOT, 3) == 1
    clock.now += 60  # a long pause refills to the capacity, not beyond
    assert admitted(limits, BOT, 20) == 5


def test_a_slow_rate_still_lets_one_request_through() -> None:
    clock = Clock()
    limits = RateLimits.from_settings(["predictor=60/min"], clock=clock)
    assert admitted(limits, BOT, 5) == 1
    clock.now += 0.5
    assert admitted(limits, BOT, 5) == 0
    clock.now += 0.5
    assert admitted(limits, BOT, 5) == 1


def test_each_principal_has_its_own_bucket() -> None:
    clock = Clock()
    limits = RateLimits.from_settings(["predictor=2/s"], clock=clock)
    assert admitted(limits, BOT, 5) == 2
    assert admitted(limits, OTHER_BOT, 5) == 2
    assert admitted(limits, PERSON, 5) == 2  # a JWT's subject, by its name


def test_the_keys_own_rate_beats_its_id_entry_which_beats_its_role() -> None:
    clock = Clock()
    entries = ["predictor=2/s", f"{BOT.key_id}=4/s"]
    limits = RateLimits.from_settings(entries, [record(OTHER_BOT, "3/s")], clock=clock)
    assert admitted(limits, BOT, 10) == 4
    assert admitted(limits, OTHER_BOT, 10) == 3
    assert limits.limit_of(PERSON) == limits.limit_of(Principal("x", Role.PREDICTOR))

    # A reload that gives BOT a rate of its own takes effect with a fresh bucket.
    limits.update([record(OTHER_BOT, "3/s"), record(BOT, "7/s")])
    assert admitted(limits, BOT, 10) == 7
    with pytest.raises(RateLimited, match=f"7/s \\(key {BOT.key_id}'s own rate\\)"):
        limits.admit(BOT)


def test_a_principal_without_a_limit_is_never_refused_and_costs_little() -> None:
    limits = RateLimits.from_settings(["predictor=1/s"])
    assert limits.limit_of(ADMIN) is None
    assert admitted(limits, ADMIN, 10_000) == 10_000
    unlimited = min(timeit.repeat(lambda: limits.admit(ADMIN), number=10_000, repeat=5))
    assert unlimited / 10_000 < 2e-6  # well under a microsecond on any machine this runs on

    limited = RateLimits.from_settings(["admin=1000000/s"])
    cost = min(timeit.repeat(lambda: limited.admit(ADMIN), number=10_000, repeat=5))
    assert cost / 10_000 < 5e-6


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("predictor", "must look like ROLE=RATE or KEY_ID=RATE"),
        ("robot=5/s", "must look like ROLE=RATE or KEY_ID=RATE"),
        ("a1b2=5/s", "must look like ROLE=RATE or KEY_ID=RATE"),
        ("predictor=5", "rate_limits entry 'predictor=5': rate '5' must look like 100/s"),
        ("predictor=0/s", "rate '0/s' must look like"),
    ],
)
def test_a_malformed_entry_is_refused_by_name(entry: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as refused:
        parse_limits(["admin=5/s", entry])
    assert repr(entry) in str(refused.value)


def test_roles_and_ids_parse_with_spaces_and_any_case() -> None:
    roles, keys = parse_limits([" Predictor = 100/s", "a1b2c3d4e5f6=6000/min"])
    assert roles[Role.PREDICTOR].per_s == 100
    assert keys["a1b2c3d4e5f6"].per_s == 100


def test_serving_refuses_a_malformed_setting_at_start(workspace: Workspace) -> None:
    for auth in (True, False):
        settings = load_settings(
            {"home": workspace.home.root, "auth": auth, "rate_limits": "predictor=fast"}, env={}
        )
        with pytest.raises(InvalidInput, match="rate_limits entry 'predictor=fast'"):
            authenticator_for(settings, workspace)


def test_the_authenticator_limits_with_a_keys_own_rate(workspace: Workspace) -> None:
    settings = load_settings(
        {"home": workspace.home.root, "rate_limits": "predictor=100/s"}, env={}
    )
    slow, slow_key = workspace.keys.create(local_user(), "slow", Role.PREDICTOR, rate="2/s")
    _, fast_key = workspace.keys.create(local_user(), "fast", Role.PREDICTOR)
    auth = authenticator_for(settings, workspace)

    def passes(key: str, requests: int) -> int:
        passed = 0
        for _ in range(requests):
            try:
                auth.authorize(key, Action.INFER, "lr")
                passed += 1
            except RateLimited:
                pass
        return passed

    assert passes(slow_key, 10) == 2
    assert passes(fast_key, 10) == 10
    with pytest.raises(RateLimited, match=f"key {slow.key_id} is over its rate limit of 2/s"):
        auth.authorize(slow_key, Action.INFER, "lr")


# The anomaly detector


def window(limits: RateLimits, clock: Clock, principal: Principal, requests: int) -> list[str]:
    """One window of ``requests`` spread over it, then the roll; the events' kinds."""
    start = clock.now
    for i in range(requests):
        clock.now = start + WINDOW_S * i / requests
        limits.admit(principal)
    clock.now = start + WINDOW_S
    return [event.kind for event in limits.roll()]


def test_a_jump_far_above_a_keys_baseline_is_one_event() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    for _ in range(WARMUP_WINDOWS + 2):
        assert window(limits, clock, BOT, 20) == []  # 2/s

    for _ in range(1000):  # 100/s for one window
        limits.admit(BOT)
    clock.now += WINDOW_S
    (event,) = limits.roll()
    assert event.kind == RATE_ANOMALY
    assert (event.principal, event.key_id) == ("key:bot", BOT.key_id)
    assert "100.0 requests/s over the last 10 s" in event.detail
    assert "baseline of 2.00/s" in event.detail
    assert event.status == 0  # not a refusal: the requests were served


def test_a_second_jump_within_the_cool_down_is_no_second_event() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    for _ in range(WARMUP_WINDOWS):
        window(limits, clock, BOT, 20)
    assert window(limits, clock, BOT, 1000) == [RATE_ANOMALY]
    jumped = clock.now
    while clock.now < jumped + COOLDOWN_S - 3 * WINDOW_S:
        window(limits, clock, BOT, 20)  # back to quiet: the baseline falls again
    assert window(limits, clock, BOT, 1000) == []
    for _ in range(30):  # past the cool-down, and quiet long enough for the baseline to fall
        window(limits, clock, BOT, 20)
    assert clock.now > jumped + COOLDOWN_S
    assert window(limits, clock, BOT, 1000) == [RATE_ANOMALY]


def test_steady_or_slowly_growing_traffic_is_no_anomaly() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    for n in range(60):
        assert window(limits, clock, BOT, 500 + 20 * n) == []


def test_no_verdict_before_the_warm_up_nor_under_the_floor() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    assert window(limits, clock, BOT, 1) == []
    assert window(limits, clock, BOT, 2000) == []  # a jump, but there is no baseline yet

    quiet = RateLimits(clock=clock)
    for _ in range(WARMUP_WINDOWS + 1):
        window(quiet, clock, OTHER_BOT, 1)
    assert window(quiet, clock, OTHER_BOT, 40) == []  # 40x, but only 4 requests a second
    assert window(quiet, clock, OTHER_BOT, 2000) == [RATE_ANOMALY]


def test_each_key_is_judged_against_its_own_baseline() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    for _ in range(WARMUP_WINDOWS + 1):
        for _ in range(2000):
            limits.admit(ADMIN)  # busy: 200/s
        for _ in range(20):
            limits.admit(BOT)  # quiet: 2/s
        clock.now += WINDOW_S
        assert limits.roll() == []
    for _ in range(2000):
        limits.admit(ADMIN)
        limits.admit(BOT)
    clock.now += WINDOW_S
    assert [event.key_id for event in limits.roll()] == [BOT.key_id]


async def test_the_background_task_records_the_anomaly(workspace: Workspace) -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    for _ in range(WARMUP_WINDOWS + 1):
        window(limits, clock, BOT, 10)
    for _ in range(1000):
        limits.admit(BOT)
    clock.now += WINDOW_S
    auth = Authenticator(None, limiter=limits, events=workspace.events)
    task = asyncio.create_task(auth.keep_fresh())
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (event,) = workspace.events.query()
    assert (event.kind, event.key_id) == (RATE_ANOMALY, BOT.key_id)
