"""Every gate of the policy on a real home: a version registered from a trained model, variants of
it stored beside (another card, metrics, signature, personal columns), live evaluations written as
the monitoring does, a real signing key, and an artifact corrupted on disk."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from dockyard.governance.gates import (
    Evidence,
    GateResult,
    PolicyCheck,
    check_gates,
    signature_changes,
)
from dockyard.governance.policy import MetricGate, Policy
from dockyard.monitoring.feedback import Evaluation, store_evaluations
from dockyard.registry.records import ModelVersion, Signature, TensorSpec
from dockyard.services.register import Registration, register
from dockyard.services.signatures import check_signed, create_key, sign
from dockyard.services.workspace import Workspace

CARD = {"intended_use": "score card payments", "limitations": "EU only", "owners": ["risk"]}
OPEN = Policy(required_card_fields=())
"""A policy whose gates all pass unless a test turns one on."""
NOW = datetime(2026, 12, 1, tzinfo=UTC)
NAME = "personal_data"


@pytest.fixture
def registered(
    workspace: Workspace, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]
) -> ModelVersion:
    """``lr`` version 1: a real scikit-learn model with an AUC of 0.9 recorded."""
    request = Registration("lr", reference_data=tabular_data[0][:50], metrics={"auc": 0.9})
    return register(workspace, logistic, request)


def _variant(workspace: Workspace, base: ModelVersion, **changes: Any) -> ModelVersion:
    """A new version of ``base``'s model stored with the same artifact and ``changes``."""
    values: dict[str, Any] = {
        "model": base.model,
        "framework": base.framework,
        "artifact": base.artifact,
        "signature": base.signature,
        "lineage": base.lineage,
        "metrics": base.metrics,
        "created_by": base.created_by,
        **changes,
    }
    return workspace.store.create_version(**values)


def _check(
    workspace: Workspace, policy: Policy, version: ModelVersion, **governance: Any
) -> PolicyCheck:
    """The gates of ``policy``; ``governance``: the table the personal-data rules are read from."""
    evidence = Evidence(
        dataclasses.replace(workspace.settings, governance=governance),
        workspace.store,
        workspace.artifacts,
        lambda found: check_signed(workspace, found),
    )
    return check_gates(policy, evidence, version, "production")


def _gate(checked: PolicyCheck, name: str) -> GateResult:
    return next(gate for gate in checked.gates if gate.name == name)


def _evaluated(workspace: Workspace, version: ModelVersion, at: datetime, **metrics: float) -> None:
    results = [
        Evaluation(version.model, version.version, metric, value, 200, None)
        for metric, value in metrics.items()
    ]
    store_evaluations(workspace.store, results, "24h", at)


def test_every_gate_is_listed_in_order(workspace: Workspace, registered: ModelVersion) -> None:
    policy = dataclasses.replace(OPEN, metric_gates=(MetricGate.parse("auc >= 0.8"),))

    checked = _check(workspace, policy, registered)

    assert [gate.name for gate in checked.gates] == [
        "card",
        "metric auc >= 0.8",
        "challenger",
        "framework",
        "format",
        "signature",
        "artifact",
        "signed",
        "personal_data",
    ]
    assert checked.passed
    assert checked.current is None
    assert checked.to_dict()["passed"] is True


def test_the_card_gate_names_the_missing_fields(
    workspace: Workspace, registered: ModelVersion
) -> None:
    blank = _check(workspace, Policy(), registered)
    partial = _variant(workspace, registered, card={**CARD, "limitations": "  "})
    complete = _variant(workspace, registered, card=CARD)

    assert not _gate(blank, "card").passed
    assert "lacks intended_use, limitations, owners" in _gate(blank, "card").detail
    assert "lacks limitations" in _gate(_check(workspace, Policy(), partial), "card").detail
    assert _gate(_check(workspace, Policy(), complete), "card").passed
    assert "gate 'card' failed" in blank.refusal()


@pytest.mark.parametrize(
    ("gate", "passed", "detail"),
    [
        ("auc >= 0.8", True, "auc is 0.9"),
        ("auc >= 0.99", False, "auc is 0.9"),
        ("auc < 0.9", False, "auc is 0.9"),
        ("rmse < 3", False, "has no recorded 'rmse' (recorded: auc)"),
    ],
    ids=["holds", "below", "strict", "missing-metric"],
)
def test_metric_gates_read_the_recorded_metrics(
    workspace: Workspace, registered: ModelVersion, gate: str, passed: bool, detail: str
) -> None:
    policy = dataclasses.replace(OPEN, metric_gates=(MetricGate.parse(gate),))

    result = _gate(_check(workspace, policy, registered), f"metric {MetricGate.parse(gate)}")

    assert result.passed is passed
    assert detail in result.detail


def test_the_challenger_must_match_the_champion_on_live_labels(
    workspace: Workspace, registered: ModelVersion
) -> None:
    policy = dataclasses.replace(OPEN, challenger_beats_champion=True)
    challenger = _variant(workspace, registered)
    assert "no champion" in _gate(_check(workspace, policy, challenger), "challenger").detail
    workspace.store.set_alias("lr", "production", 1)

    unevaluated = _gate(_check(workspace, policy, challenger), "challenger")
    _evaluated(workspace, registered, NOW, auc=0.91, accuracy=0.8)
    _evaluated(workspace, challenger, NOW - timedelta(days=1), auc=0.99)
    _evaluated(workspace, challenger, NOW, auc=0.90, accuracy=0.85)
    worse = _gate(_check(workspace, policy, challenger), "challenger")
    _evaluated(workspace, challenger, NOW + timedelta(hours=1), auc=0.91)
    equal = _gate(_check(workspace, policy, challenger), "challenger")

    assert not unevaluated.passed
    assert "lr:2 has no evaluation on labelled traffic" in unevaluated.detail
    assert not worse.passed  # its newest evaluation counts, not its best one
    assert "auc 0.9 on 200 rows (24h), worse than lr:1 (@production): 0.91" in worse.detail
    assert equal.passed
    assert "at least as good as" in equal.detail


def test_an_error_metric_is_better_lower(workspace: Workspace, registered: ModelVersion) -> None:
    policy = dataclasses.replace(OPEN, challenger_beats_champion=True)
    challenger = _variant(workspace, registered)
    workspace.store.set_alias("lr", "production", 1)
    _evaluated(workspace, registered, NOW, rmse=2.0)
    _evaluated(workspace, challenger, NOW, rmse=1.5)

    assert _gate(_check(workspace, policy, challenger), "challenger").passed


def test_allowed_frameworks_and_formats(workspace: Workspace, registered: ModelVersion) -> None:
    allowed = dataclasses.replace(
        OPEN, allowed_frameworks=("sklearn",), allowed_formats=("skops", "onnx")
    )
    no_skops = dataclasses.replace(OPEN, allowed_frameworks=("onnx",), allowed_formats=("onnx",))

    assert _check(workspace, allowed, registered).passed
    refused = _check(workspace, no_skops, registered)
    assert _gate(refused, "framework").detail == "sklearn is not allowed; allowed: onnx"
    assert _gate(refused, "format").detail == "skops is not allowed; allowed: onnx"


def test_the_signature_must_fit_the_version_in_production(
    workspace: Workspace, registered: ModelVersion
) -> None:
    inputs = registered.signature.inputs
    changed = dataclasses.replace(
        registered.signature,
        inputs=(dataclasses.replace(inputs[0], datatype="INT64"), *inputs[2:]),
    )
    same = _variant(workspace, registered)
    different = _variant(workspace, registered, signature=changed)
    workspace.store.set_alias("lr", "production", 1)

    assert _gate(_check(workspace, OPEN, same), "signature").passed
    refused = _gate(_check(workspace, OPEN, different), "signature")
    assert not refused.passed
    assert refused.detail == (
        "incompatible with lr:1 (@production): input 'x0' FP64 → INT64; input 'x1' removed"
    )


def test_compatible_and_incompatible_signature_changes() -> None:
    before = Signature(
        inputs=(TensorSpec("amount", "FP64", (-1,), allow_nan=True),),
        outputs=(TensorSpec("label", "INT64", (-1,)),),
        tabular=True,
    )
    more_outputs = dataclasses.replace(
        before, outputs=(*before.outputs, TensorSpec("proba", "FP64", (-1, 2)))
    )
    stricter = Signature(
        inputs=(
            TensorSpec("amount", "FP64", (-1,), categorical=True),
            TensorSpec("country", "BYTES", (-1,)),
        ),
        outputs=(TensorSpec("label", "FP32", (-1, 1)),),
        tabular=False,
    )

    assert signature_changes(before, more_outputs) == []
    assert signature_changes(before, stricter) == [
        "input 'amount' becomes categorical",
        "input 'amount' no longer accepts NaN",
        "inputs change from tabular to tensor",
        "new input 'country' (today's requests lack it)",
        "output 'label' INT64 → FP32",
        "output 'label' shape [-1] → [-1, 1]",
    ]


def test_the_artifact_is_rehashed_on_disk(workspace: Workspace, registered: ModelVersion) -> None:
    assert _gate(_check(workspace, OPEN, registered), "artifact").passed
    blob = Path(workspace.artifacts.verified_path(registered.artifact.digest))
    blob.chmod(0o600)
    blob.write_bytes(blob.read_bytes() + b"tampered")

    corrupt = _gate(_check(workspace, OPEN, registered), "artifact")
    blob.unlink()
    missing = _gate(_check(workspace, OPEN, registered), "artifact")

    assert not corrupt.passed
    assert corrupt.detail.startswith("the stored artifact of lr:1 is sha256 ")
    assert str(workspace.home.root) not in corrupt.detail  # no server path in an answer
    assert "is missing, not sha256" in missing.detail


def test_a_signature_is_checked_when_the_policy_asks(
    workspace: Workspace, registered: ModelVersion
) -> None:
    policy = dataclasses.replace(OPEN, require_signature=True)

    assert _gate(_check(workspace, OPEN, registered), "signed").detail == (
        "not required by the policy"
    )
    unsigned = _gate(_check(workspace, policy, registered), "signed")
    create_key(workspace)
    sign(workspace, "lr:1")
    signed = _gate(_check(workspace, policy, registered), "signed")

    assert not unsigned.passed
    assert "dockyard models sign" in unsigned.detail
    assert signed.passed


def test_personal_columns_need_a_rule(workspace: Workspace, registered: ModelVersion) -> None:
    flagged = _variant(workspace, registered, personal_data={"x3": "email", "x7": "phone"})

    assert _gate(_check(workspace, OPEN, registered), NAME).passed
    refused = _gate(_check(workspace, OPEN, flagged), NAME)

    half = _gate(_check(workspace, OPEN, flagged, personal_data={"lr": {"x3": "hash"}}), NAME)
    rules = {"lr": {"x3": "hash", "x7": "mask:2"}, "other": {"x7": "keep"}}
    ruled = _gate(_check(workspace, OPEN, flagged, personal_data=rules), NAME)

    assert not refused.passed
    assert "no rule: x3 (email), x7 (phone)" in refused.detail
    assert not half.passed
    assert "no rule: x7 (phone)" in half.detail
    assert ruled.passed
