"""``dockyard optimize`` on the benchmark models (issue 15): each compiled by every converter that
takes it, and raw in-process rows of the original and each optimized runtime as Dockyard loads
them, at batch 1 and ``reference.BATCH``.

The optimized versions are registered in the bench home beside the originals; the ``optimize``
scenario serves both side by side (``lineup.optimize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import models
import numpy as np
import reference

TARGETS = {"small": ("onnx",), "heavy": ("treelite", "native")}
"""Every converter that takes each model: skl2onnx for the logistic regression; Treelite (GTIL)
and tl2cgen (native code) for the gradient boosting, where skl2onnx 1.20 fails (``auto`` records
the fall-through; its attempts are in the report)."""
CONVERTER_MODELS = {
    "xgboost": ("onnx", "treelite", "native"),
    "lightgbm": ("onnx", "treelite", "native"),
    "torch": ("onnx",),
}
"""Models trained on the same data only for the raw rows of the other converters (onnxmltools,
torch.onnx; Treelite and tl2cgen again): 300-tree XGBoost and LightGBM classifiers and a
30-64-2 PyTorch network. Registered in the bench home; not served."""
TREES = 300


@dataclass(frozen=True)
class Optimized:
    """The original and served optimized refs of each benchmark model, every optimized ref, and
    what optimize recorded."""

    refs: dict[str, tuple[str, str]]
    """model -> (original ref, the fastest optimized ref: the one the scenario serves)."""
    variants: dict[str, list[str]]
    """model -> every optimized ref (one per converter)."""
    records: list[dict[str, Any]]
    sources: dict[str, str]
    """model -> its original ref, for every model optimized (the served ones and the others)."""


def register(built: models.ModelSet) -> Optimized:
    """Optimize ``small:1`` and ``heavy:1`` in the bench home with each converter that takes
    them, proven on the reference rows; the fastest of each serves in the scenario."""
    from dockyard.config import load_settings
    from dockyard.errors import OptimizationRefused
    from dockyard.services.optimize import Optimization, optimize
    from dockyard.services.workspace import Workspace

    workspace = Workspace.open(load_settings({"home": built.home}, env={}))
    refs, variants, records = {}, {}, []
    try:
        for name, targets in TARGETS.items():
            done = [
                optimize(
                    workspace,
                    # Proven on the rows rebuilt from the profile, as a user's run is.
                    Optimization(f"{name}:1", target=target),
                )
                for target in targets
            ]
            fastest = min(done, key=_cost)
            refs[name] = (fastest.source.ref, fastest.version.ref)
            variants[name] = [result.version.ref for result in done]
            for result in done:
                record = dict(result.version.lineage.optimization or {})
                record["served"] = result is fastest
                records.append({"model": name, "optimized": result.version.ref, **record})
        records += _auto_attempts(workspace, built)
        sources = {name: pair[0] for name, pair in refs.items()}
        for name, targets in CONVERTER_MODELS.items():
            source = _train_and_register(workspace, built, name)
            sources[name] = source
            rows = _reference(built, name)
            variants[name] = []
            for target in targets:
                # Tabular: the profile's rows; the network's tensor: its reference rows.
                given = rows if name == "torch" else None
                try:
                    result = optimize(workspace, Optimization(source, target, reference_data=given))
                except OptimizationRefused as refused:  # a finding, reported as such
                    records.append({"model": name, "target": target, "refused": refused.message})
                    continue
                variants[name].append(result.version.ref)
                record = dict(result.version.lineage.optimization or {})
                records.append(
                    {"model": name, "optimized": result.version.ref, "served": False, **record}
                )
    finally:
        workspace.store.engine.dispose()
    return Optimized(refs, variants, records, sources)


def _reference(built: models.ModelSet, name: str) -> Any:
    """The reference rows the benchmark models were registered with (``models.build``)."""
    rows = models.training_data()[0][: models.REFERENCE_ROWS]
    return rows.astype(np.float32) if name == "torch" else rows


def _train_and_register(workspace: Any, built: models.ModelSet, name: str) -> str:
    """Train one of ``CONVERTER_MODELS`` on the benchmark data and register it; its ref."""
    from dockyard.services.register import Registration, register

    x, y = models.training_data()
    model: Any
    if name == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(n_estimators=TREES, max_depth=6, n_jobs=1).fit(x, y)
    elif name == "lightgbm":
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=TREES, n_jobs=1, verbose=-1).fit(x, y)
    else:
        import torch

        torch.manual_seed(models.SEED)
        model = torch.nn.Sequential(
            torch.nn.Linear(models.FEATURES, 64),
            torch.nn.ReLU(),
            torch.nn.Linear(64, 2),
            torch.nn.Softmax(dim=1),
        )
    version = register(
        workspace, model, Registration(f"bench-{name}", reference_data=_reference(built, name))
    )
    return version.ref


def _cost(done: Any) -> float:
    latency = done.chosen.latency
    return float(latency.single_ms * latency.batch_ms)


def _auto_attempts(workspace: Any, built: models.ModelSet) -> list[dict[str, Any]]:
    """``--target auto`` on the heavy model, for its attempts (skl2onnx's known gap, then the
    others): registered too, as any optimize run."""
    from dockyard.services.optimize import Optimization, optimize

    done = optimize(
        workspace,
        Optimization("heavy:1"),
    )
    record = dict(done.version.lineage.optimization or {})
    record["attempts"] = [
        {"converter": a.converter, "passed": a.passed, "reason": a.reason} for a in done.attempts
    ]
    return [{"model": "heavy (auto)", "optimized": done.version.ref, "served": False, **record}]


def measure_raw(
    built: models.ModelSet, optimized: Optimized, seconds: float
) -> list[dict[str, Any]]:
    """Each original and optimized runtime, as a served version loads it, predicting
    ``predict_proba`` on one thread at batch 1 and ``reference.BATCH``."""
    from dockyard.config import load_settings
    from dockyard.services.workspace import Workspace

    workspace = Workspace.open(load_settings({"home": built.home}, env={}))
    rows: list[dict[str, Any]] = []
    try:
        for name, source in optimized.sources.items():
            for ref in (source, *optimized.variants[name]):
                version = workspace.resolve(ref)
                runtime = workspace.load(version)
                record = version.lineage.optimization
                how = (
                    f"{record['converter']} {record['converter_version']}"
                    if record
                    else f"{version.framework}, original"
                )
                # The classifiers' probabilities; the network's one output.
                outputs = () if name == "torch" else ("predict_proba",)
                for batch in (1, reference.BATCH):
                    x = _inputs(built, name, batch)
                    measured = reference.rows_per_second(
                        lambda x, runtime=runtime, outputs=outputs, name=name: runtime.predict(
                            {"input-0": x} if name == "torch" else x, outputs
                        ),
                        x,
                        seconds,
                    )
                    rows.append({"model": f"{name} {ref} ({how})", **measured})
    finally:
        workspace.store.engine.dispose()
    return rows


def _inputs(built: models.ModelSet, name: str, batch: int) -> np.ndarray:
    """The rows as a request's become for the model: float64, or float32 for the network (whose
    one tensor, ``input-0``, is named at each call)."""
    dtype = np.float32 if name == "torch" else np.float64
    return np.ascontiguousarray(built.rows[:batch], dtype=dtype)
