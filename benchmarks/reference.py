"""The physical limit: raw in-process ``predict_proba`` (and onnxruntime) at batch 1 and batched."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

BATCH = 64


def rows_per_second(predict: Any, x: np.ndarray, seconds: float) -> dict[str, float]:
    """Call ``predict(x)`` repeatedly for about ``seconds``; rows/s and ms per call."""
    predict(x)
    calls = 0
    started = time.perf_counter()
    deadline = started + seconds
    while (now := time.perf_counter()) < deadline or calls == 0:
        predict(x)
        calls += 1
    elapsed = now - started
    return {
        "batch": len(x),
        "rows_per_s": calls * len(x) / elapsed,
        "ms_per_call": elapsed / calls * 1000,
    }


def measure(
    small: Any, heavy: Any, onnx_bytes: bytes, rows: np.ndarray, seconds: float
) -> list[dict[str, Any]]:
    """Each model at batch 1 and ``BATCH``, one thread (as the servers run), and the heavy one
    with an OpenMP thread per core (the default) too. sklearn predict_proba, onnxruntime run.
    """
    import onnxruntime as ort
    from threadpoolctl import threadpool_limits

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    cores = len(os.sched_getaffinity(0))
    results = []
    for label, predict, dtype, threads in (
        ("small (sklearn)", small.predict_proba, np.float64, 1),
        ("heavy (sklearn)", heavy.predict_proba, np.float64, 1),
        ("small (onnxruntime)", lambda x: session.run(None, {input_name: x}), np.float32, 1),
        (f"heavy (sklearn, {cores} OpenMP threads)", heavy.predict_proba, np.float64, cores),
    ):
        for batch in (1, BATCH):
            x = np.ascontiguousarray(rows[:batch], dtype=dtype)
            with threadpool_limits(limits=threads):
                measured = rows_per_second(predict, x, seconds)
            results.append({"model": label, **measured})
    return results
