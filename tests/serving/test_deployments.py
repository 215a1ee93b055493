"""A Deployment takes its batching and isolation knobs from the settings, per model."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import numpy as np

from dockyard.config import load_settings
from dockyard.registry.records import ArtifactRef, Lineage, ModelVersion, Signature, TensorSpec
from dockyard.reliability.isolation import IsolatedRuntime
from dockyard.serving.deployments import Deployment


class SlowDoubler:
    """A runtime that holds every call until released; requests sent together queue together."""

    framework = "pyfunc"
    output_names = ("predict",)
    fork_safe = True

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.release = threading.Event()

    def predict(self, x: Any, outputs: Any) -> dict[str, np.ndarray]:
        self.batches.append(len(x))
        assert self.release.wait(10)
        return {"predict": x[:, 0] * 2}


def _version(model: str) -> ModelVersion:
    spec = TensorSpec("x0", "FP64", (-1,))
    return ModelVersion(
        model=model,
        version=1,
        framework="pyfunc",
        artifact=ArtifactRef("0" * 64, "pyfunc-tar"),
        signature=Signature((spec,), (TensorSpec("predict", "FP64", (-1,)),), tabular=True),
        lineage=Lineage(None, None, {}, None, "3.11", {}),
    )


async def _batches_for(model: str, settings_flags: dict[str, Any]) -> list[int]:
    runtime = SlowDoubler()
    deployment = Deployment.create(_version(model), runtime, load_settings(settings_flags, env={}))
    tasks = [asyncio.create_task(deployment.infer(np.full((1, 1), v), ())) for v in range(4)]
    await asyncio.sleep(0.05)
    runtime.release.set()
    results = await asyncio.gather(*tasks)
    assert [float(r["predict"][0]) for r in results] == [0.0, 2.0, 4.0, 6.0]
    deployment.close()
    return runtime.batches


async def test_batching_can_be_turned_off_for_one_model() -> None:
    flags = {"model_options": ["plain.batching=false"]}
    assert await _batches_for("batched", flags) == [4]
    assert await _batches_for("plain", flags) == [1, 1, 1, 1]


async def test_max_batch_size_per_model() -> None:
    flags = {"max_batch_size": 64, "model_options": ["small.max_batch_size=2"]}
    assert await _batches_for("small", flags) == [2, 2]


def test_a_deployment_builds_its_input_plan_once() -> None:
    deployment = Deployment.create(_version("planned"), SlowDoubler(), load_settings(env={}))
    plan = deployment.input_plan
    block = np.ones((2, 1))
    assert plan.prepare({"input-0": block}) is block
    assert deployment.input_plan is plan
    deployment.close()


async def test_an_isolated_model_predicts_in_a_child_process() -> None:
    runtime = SlowDoubler()
    runtime.release.set()
    settings = load_settings({"model_options": ["apart.isolate=true"]}, env={})
    deployment = Deployment.create(_version("apart"), runtime, settings)
    assert isinstance(deployment.runtime, IsolatedRuntime)
    deployment.start()
    child = deployment.runtime.child_pid
    assert child is not None
    assert child != os.getpid()
    result = await deployment.infer(np.full((2, 1), 3.0), ())
    np.testing.assert_array_equal(result["predict"], [6.0, 6.0])
    assert runtime.batches == []  # the parent's copy of the model never ran: the child's did
    deployment.close()
    assert deployment.runtime.child_pid is None
    plain = Deployment.create(_version("plain"), SlowDoubler(), settings)
    assert isinstance(plain.runtime, SlowDoubler)
    plain.close()
