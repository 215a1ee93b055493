"""Every runtime, registered through the service and served over HTTP by one real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import onnx
import pandas as pd
import pytest
import xgboost
from skl2onnx import to_onnx
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from dockyard.client import Client
from dockyard.config import load_settings
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from extras import HAS_TORCH, needs_torch
from servers import Server

pytestmark = pytest.mark.e2e
RNG = np.random.default_rng(3)
X = RNG.normal(size=(300, 6))
Y = (X[:, 0] - X[:, 3] > 0).astype(np.int64)
ROWS = X[:5]

PYFUNC_SOURCE = """
import numpy as np


def score(x):
    return {"score": x.sum(axis=1) * 2.0}
"""


def _torch_model() -> tuple[Any, np.ndarray]:
    """A small torch network and its outputs on ``ROWS`` (where torch is installed)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(x), dim=1)

    net = Net().eval()
    with torch.no_grad():
        expected = net(torch.from_numpy(ROWS.astype(np.float32))).numpy()
    return net, expected


def _frame() -> pd.DataFrame:
    colours = np.array(["red", "green", "blue"])[np.arange(len(X)) % 3]
    return pd.DataFrame({"size": X[:, 0], "weight": X[:, 1], "colour": colours})


Case = tuple[Any, Registration, Callable[[], dict[str, Any]], Any]
"""A model, its registration, the request's inputs and the expected answer."""


def _models(tmp: Path) -> dict[str, Case]:
    """name → (model, registration, the V2 inputs to send, the expected main output)."""
    matrix = {"input-0": ROWS}
    hgb = HistGradientBoostingClassifier(max_iter=20).fit(X, Y)
    xgb = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, Y)
    lgb = lightgbm.LGBMRegressor(n_estimators=10, min_child_samples=5, verbose=-1).fit(X, X[:, 0])
    frame = _frame()
    pipeline = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
        LogisticRegression(),
    ).fit(frame, Y)
    linear = LogisticRegression().fit(X.astype(np.float32), Y)
    onnx_model = to_onnx(linear, X[:1].astype(np.float32), options={"zipmap": False})
    code = tmp / "code"
    code.mkdir()
    (code / "scorer.py").write_text(PYFUNC_SOURCE)
    onnx_input = onnx_model.graph.input[0].name
    assert isinstance(onnx_model, onnx.ModelProto)
    models: dict[str, Case] = {
        "hgb": (hgb, Registration("hgb", reference_data=X), lambda: matrix, hgb.predict(ROWS)),
        "xgb": (xgb, Registration("xgb", reference_data=X), lambda: matrix, xgb.predict(ROWS)),
        "lgb": (lgb, Registration("lgb", reference_data=X), lambda: matrix, lgb.predict(ROWS)),
        "mixed": (
            pipeline,
            Registration("mixed", reference_data=frame),
            lambda: {name: frame[name].to_numpy()[:5] for name in frame.columns},
            pipeline.predict(frame.iloc[:5]),
        ),
        "onnx": (
            onnx_model,
            Registration("onnx", reference_data=X.astype(np.float32)),
            lambda: {onnx_input: ROWS.astype(np.float32)},
            linear.predict(ROWS.astype(np.float32)),
        ),
        "pyfunc": (
            code,
            Registration("pyfunc", reference_data=X, entrypoint="scorer:score"),
            lambda: matrix,
            ROWS.sum(axis=1) * 2.0,
        ),
    }
    if HAS_TORCH:
        net, torch_expected = _torch_model()
        models["torch"] = (
            net,
            Registration("torch", reference_data=X.astype(np.float32)),
            lambda: {"input-0": ROWS.astype(np.float32)},
            torch_expected,
        )
    return models


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, Any]]]:
    home = tmp_path_factory.mktemp("home")
    models = _models(tmp_path_factory.mktemp("code"))
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    for model, registration, _, _ in models.values():
        register(workspace, model, registration)
    log = tmp_path_factory.mktemp("logs") / "server.log"
    server = Server(home, [f"{name}:1" for name in models], log)
    yield server, models
    server.stop()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("hgb", id="sklearn-hgb"),
        pytest.param("xgb", id="xgboost"),
        pytest.param("lgb", id="lightgbm"),
        pytest.param("mixed", id="sklearn-dataframe"),
        pytest.param("onnx", id="onnx"),
        pytest.param("torch", id="torch", marks=needs_torch),
        pytest.param("pyfunc", id="pyfunc"),
    ],
)
def test_served_predictions_match_the_model(
    served: tuple[Server, dict[str, Any]], name: str
) -> None:
    server, models = served
    _, _, inputs, expected = models[name]
    with Client(server.url) as client:
        metadata = client.model_metadata(name)
        outputs = client.infer(name, inputs())
    main = outputs[metadata["outputs"][0]["name"]]
    assert len(main) == len(ROWS)
    np.testing.assert_allclose(main, expected, rtol=1e-5, atol=1e-6)
