"""The circuit breaker: its states on a clock the test moves, and a Deployment wired to it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from clocks import Clock
from dockyard.config import load_settings
from dockyard.errors import CircuitOpen, InvalidInput, PredictionFailed
from dockyard.registry.records import ArtifactRef, Lineage, ModelVersion, Signature, TensorSpec
from dockyard.serving.breaker import Breaker, Ticket
from dockyard.serving.deployments import Deployment


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2025, 1, 1, tzinfo=UTC))


def _fail(breaker: Breaker, times: int) -> None:
    for _ in range(times):
        ticket = breaker.admit()
        assert ticket is Ticket.ADMITTED
        breaker.failed(ticket)


def test_failures_in_a_row_open_the_circuit_and_a_success_resets_the_count(clock: Clock) -> None:
    breaker = Breaker("fraud:2", failures=3, reset_s=30, clock=clock)
    _fail(breaker, 2)
    breaker.succeeded(breaker.admit())
    _fail(breaker, 2)
    assert not breaker.is_open
    _fail(breaker, 1)
    assert breaker.is_open
    assert breaker.admit() is Ticket.REFUSED
    clock.now += 10
    refusal = breaker.refusal()
    assert isinstance(refusal, CircuitOpen)
    assert refusal.http_status == 503
    assert refusal.retry_after == pytest.approx(20)
    assert "fraud:2 keeps failing" in refusal.message


def test_after_the_reset_time_one_trial_passes_and_its_outcome_decides(clock: Clock) -> None:
    breaker = Breaker("fraud:2", failures=1, reset_s=30, clock=clock)
    _fail(breaker, 1)
    clock.now += 30
    assert not breaker.blocks()
    trial = breaker.admit()
    assert trial is Ticket.TRIAL
    assert breaker.admit() is Ticket.REFUSED  # one trial at a time
    breaker.failed(trial)  # re-opens for another reset time
    assert breaker.opened == 2
    clock.now += 29
    assert breaker.admit() is Ticket.REFUSED
    clock.now += 1
    trial = breaker.admit()
    assert trial is Ticket.TRIAL
    breaker.succeeded(trial)
    assert not breaker.is_open
    assert breaker.admit() is Ticket.ADMITTED


def test_a_trial_without_a_verdict_hands_its_place_to_the_next_request(clock: Clock) -> None:
    breaker = Breaker("fraud:2", failures=1, reset_s=5, clock=clock)
    _fail(breaker, 1)
    clock.now += 5
    trial = breaker.admit()
    breaker.released(trial)  # the trial's input was refused: it says nothing about the model
    assert breaker.admit() is Ticket.TRIAL


def test_outcomes_of_requests_admitted_before_it_opened_change_nothing(clock: Clock) -> None:
    breaker = Breaker("fraud:2", failures=2, reset_s=5, clock=clock)
    early = [breaker.admit() for _ in range(3)]
    breaker.failed(early[0])
    breaker.failed(early[1])
    assert breaker.is_open
    breaker.succeeded(early[2])  # a late success does not close it; only a trial does
    assert breaker.is_open
    assert breaker.opened == 1


def test_zero_failures_never_opens(clock: Clock) -> None:
    breaker = Breaker("fraud:2", failures=0, reset_s=5, clock=clock)
    _fail(breaker, 100)
    assert not breaker.is_open


class Flaky:
    """A runtime that fails while ``failing`` is set, and refuses negative inputs; counts its
    calls."""

    framework = "pyfunc"
    output_names = ("predict",)
    fork_safe = True

    def __init__(self, value: float) -> None:
        self.value = value
        self.failing = True
        self.calls = 0

    def predict(self, x: Any, outputs: Any) -> dict[str, np.ndarray]:
        self.calls += 1
        if (x < 0).any():
            raise InvalidInput("x0 must not be negative")
        if self.failing:
            raise RuntimeError("broken")
        return {"predict": np.full(len(x), self.value)}


def _deployment(version: int, runtime: Flaky, flags: dict[str, Any]) -> Deployment:
    spec = TensorSpec("x0", "FP64", (-1,))
    record = ModelVersion(
        model="fraud",
        version=version,
        framework="pyfunc",
        artifact=ArtifactRef("0" * 64, "pyfunc-tar"),
        signature=Signature((spec,), (TensorSpec("predict", "FP64", (-1,)),), tabular=True),
        lineage=Lineage(None, None, {}, None, "3.11", {}),
    )
    return Deployment.create(record, runtime, load_settings(flags, env={}))


async def test_a_deployment_opens_its_circuit_and_its_fallback_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flags = {"model_options": ["fraud.breaker_failures=2"], "breaker_reset_s": 60.0}
    broken, stable = Flaky(5.0), Flaky(3.0)
    stable.failing = False
    deployment = _deployment(5, broken, flags)
    row = np.ones((1, 1))
    for _ in range(2):
        with pytest.raises(InvalidInput):  # a client's bad input says nothing about the model
            await deployment.infer(-row, ())
        assert deployment.answering() is deployment
        with pytest.raises(PredictionFailed):
            await deployment.infer(row, ())
    assert broken.calls == 4
    with pytest.raises(CircuitOpen, match="fraud:5 keeps failing"):
        await deployment.infer(row, ())
    assert broken.calls == 4  # refused without asking the model

    fallback = _deployment(3, stable, flags)
    deployment.attach_fallback(fallback, owned=True)
    answering = deployment.answering()
    assert answering is fallback
    result = await answering.infer(row, ())
    assert float(result["predict"][0]) == 3.0
    deployment.close()
    assert "circuit is open for 60 s" in caplog.text
