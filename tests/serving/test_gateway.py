"""The local gateway keeps serving what loaded and remembers why the rest did not."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import xgboost
from sklearn.linear_model import LogisticRegression

from dockyard.errors import DockyardError, MissingExtra, NotFound, NotReady
from dockyard.registry.refs import parse_ref
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from dockyard.serving.gateway import build_local_gateway

X = np.random.default_rng(2).normal(size=(60, 3))
Y = (X[:, 0] > 0).astype(np.int64)


@pytest.fixture
def registered(workspace: Workspace) -> Workspace:
    register(workspace, LogisticRegression().fit(X, Y), Registration("lr", reference_data=X))
    register(
        workspace,
        xgboost.XGBClassifier(n_estimators=2, max_depth=2).fit(X, Y),
        Registration("xgb", reference_data=X),
    )
    return workspace


def test_each_failure_is_kept_with_its_reason_and_the_rest_serve(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A module set to None in sys.modules fails to import, exactly as an uninstalled package does.
    monkeypatch.setitem(sys.modules, "xgboost", None)
    refs = [parse_ref(text) for text in ("lr:1", "lr@canary", "lr:4", "xgb:1", "ghost")]
    gateway = build_local_gateway(registered, refs)
    try:
        assert gateway.is_ready()
        assert gateway.model_names() == ["lr"]
        assert gateway.deployment("lr").version.version == 1
        assert gateway.failure("lr") is None

        missing = gateway.failure("xgb")
        assert missing is not None
        assert isinstance(missing.error, MissingExtra)
        assert missing.version is not None
        assert missing.version.version == 1
        with pytest.raises(NotReady, match=r"^model xgb:1 is not served: it failed to load: "):
            gateway.deployment("xgb")
        with pytest.raises(NotReady, match=r"pip install 'dockyard\[xgboost\]'"):
            gateway.deployments("xgb")

        with pytest.raises(NotReady, match="has no version 4"):
            gateway.deployment("lr", "4")
        unknown = gateway.failure("ghost")
        assert unknown is not None
        assert unknown.version is None
        with pytest.raises(NotReady, match="^model ghost is not served"):
            gateway.deployment("ghost")

        # Never asked for: still NotFound, as before.
        with pytest.raises(NotFound, match="no version '2'"):
            gateway.deployment("lr", "2")
        with pytest.raises(NotFound, match="served models: lr"):
            gateway.deployment("other")
        assert gateway.failure("lr", "2") is None
    finally:
        gateway.close()


def test_when_nothing_loads_one_error_names_every_reference(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "xgboost", None)
    with pytest.raises(DockyardError) as caught:
        build_local_gateway(registered, [parse_ref("xgb:1"), parse_ref("lr:9")])
    message = caught.value.message
    assert message.startswith("no model can be served: xgb:1: xgboost is not installed")
    assert "; lr:9: model 'lr' has no version 9" in message
    assert caught.value.exit_code == MissingExtra.exit_code
