"""Benchmark models: trained on seeded synthetic data, saved for each server, registered too.

``small`` (logistic regression, 30 features) is where server overhead dominates; ``heavy`` (300-tree
histogram gradient boosting) costs milliseconds per call, so batching matters; ``onnx`` is ``small``
converted with skl2onnx; ``big`` (a brute-force KNN keeping a 216 MB matrix) is for memory only.
The home also gets one predictor API key (``ModelSet.api_key``): ``dockyard serve`` requires a key
on every route but the health probes, and every request the harness sends to Dockyard carries it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson

FEATURES = 30
TRAIN_ROWS = 20_000
REFERENCE_ROWS = 500
HEAVY_TREES = 300
BIG_ROWS = 900_000  # x 30 float64 = 216 MB of weights
SEED = 0
MLSERVER_BATCH_TIME_S = 0.005
KEY_NAME = "bench"


@dataclass(frozen=True)
class Bodies:
    """Pre-encoded V2 request bodies, one row each."""

    tabular: bytes
    """``input-0`` as ``[1, 30]`` FP64, asking for ``predict_proba`` only (one model call)."""
    tabular_all_outputs: bytes
    """The same row with no ``outputs``: Dockyard computes ``predict`` and ``predict_proba``."""
    onnx: bytes
    """``X`` as ``[1, 30]`` FP32, asking for ``probabilities``."""


@dataclass(frozen=True)
class ModelSet:
    """Everything the servers need: model files, the Dockyard home and the request bodies."""

    folder: Path
    home: Path
    small_file: Path
    heavy_file: Path
    small: Any
    heavy: Any
    onnx_bytes: bytes
    rows: np.ndarray
    bodies: Bodies
    api_key: str
    """A predictor key of ``home``, sent as ``Authorization: Bearer`` to every Dockyard server."""


def training_data(rows: int = TRAIN_ROWS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(rows, FEATURES))
    weights = rng.normal(size=FEATURES)
    y = (x @ weights + rng.normal(size=rows) > 0).astype(np.int64)
    return x, y


def v2_body(name: str, datatype: str, row: list[float], outputs: list[str] | None) -> bytes:
    payload: dict[str, Any] = {
        "inputs": [{"name": name, "shape": [1, len(row)], "datatype": datatype, "data": row}]
    }
    if outputs is not None:
        payload["outputs"] = [{"name": output} for output in outputs]
    return orjson.dumps(payload)


def create_key(home: Path) -> str:
    """Create a predictor API key named ``bench`` in ``home``; return the key (shown only once).

    The same settings as the servers, which run with only ``DOCKYARD_HOME`` set: the key is hashed
    under the home's own secret, which they read too."""
    from dockyard.config import load_settings
    from dockyard.security.principals import Role, local_user
    from dockyard.services.workspace import Workspace

    workspace = Workspace.open(load_settings({"home": home}, env={}))
    try:
        _, key = workspace.keys.create(local_user(), KEY_NAME, Role.PREDICTOR)
    finally:
        workspace.store.engine.dispose()
    return key


def build(folder: Path, *, heavy_trees: int = HEAVY_TREES) -> ModelSet:
    """Train ``small``, ``heavy`` and ``onnx``; save joblib files; register them in a fresh home,
    with one predictor API key."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    import dockyard

    x, y = training_data()
    small = LogisticRegression(max_iter=1000).fit(x, y)
    heavy = HistGradientBoostingClassifier(
        max_iter=heavy_trees, early_stopping=False, random_state=SEED
    ).fit(x, y)
    converted = to_onnx(small, x[:1].astype(np.float32), options={"zipmap": False})
    folder.mkdir(parents=True, exist_ok=True)
    small_file, heavy_file = folder / "small.joblib", folder / "heavy.joblib"
    joblib.dump(small, small_file)
    joblib.dump(heavy, heavy_file)
    home = folder / "dockyard-home"
    reference = x[:REFERENCE_ROWS]
    dockyard.register_model(small, "small", reference_data=reference, home=home)
    dockyard.register_model(heavy, "heavy", reference_data=reference, home=home)
    dockyard.register_model(
        converted, "small-onnx", reference_data=reference.astype(np.float32), home=home
    )
    row = x[TRAIN_ROWS - 1].tolist()
    bodies = Bodies(
        tabular=v2_body("input-0", "FP64", row, ["predict_proba"]),
        tabular_all_outputs=v2_body("input-0", "FP64", row, None),
        onnx=v2_body(converted.graph.input[0].name, "FP32", row, ["probabilities"]),
    )
    return ModelSet(
        folder=folder,
        home=home,
        small_file=small_file,
        heavy_file=heavy_file,
        small=small,
        heavy=heavy,
        onnx_bytes=converted.SerializeToString(),
        rows=x[-64:],
        bodies=bodies,
        api_key=create_key(home),
    )


def register_big(home: Path, rows: int = BIG_ROWS) -> float:
    """Register ``big`` (KNN keeping a ``rows`` x 30 float64 matrix); return its weights in MB."""
    from sklearn.neighbors import KNeighborsClassifier

    import dockyard

    rng = np.random.default_rng(SEED + 1)
    x = rng.normal(size=(rows, FEATURES))
    y = (x[:, 0] > 0).astype(np.int64)
    model = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(x, y)
    dockyard.register_model(model, "big", reference_data=x[:50], home=home)
    return float(model._fit_X.nbytes / 1e6)


def write_mlserver_repository(
    folder: Path, name: str, model_file: Path, *, batching: bool, max_batch_size: int = 64
) -> Path:
    """An MLServer model repository serving ``model_file`` with the sklearn runtime.

    ``parallel_workers: 0`` keeps inference in the server process: MLServer 1.7's parallel
    inference pool fails to start beside current uvloop.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(
        json.dumps({"parallel_workers": 0, "metrics_endpoint": None, "debug": False})
    )
    model_dir = folder / name
    model_dir.mkdir(exist_ok=True)
    settings: dict[str, Any] = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "v1"},
    }
    if batching:
        settings["max_batch_size"] = max_batch_size
        settings["max_batch_time"] = MLSERVER_BATCH_TIME_S
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    return folder
