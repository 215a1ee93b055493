"""The ``[governance]`` table parsed into a Policy: defaults, every key, and one InvalidInput
naming the key for each mistake, which stops the commands that read it with one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from clirun import run_cli
from dockyard.config import load_settings
from dockyard.errors import InvalidInput
from dockyard.governance.policy import MetricGate, Policy


def _policy(**table: Any) -> Policy:
    settings = load_settings({"home": Path("unused")}, env={})
    return Policy.of(dataclasses.replace(settings, governance=table))


def test_an_empty_table_is_the_default_policy() -> None:
    policy = _policy()

    assert policy.protected_aliases == ("production",)
    assert policy.required_card_fields == ("intended_use", "limitations", "owners")
    assert policy.metric_gates == ()
    assert not policy.challenger_beats_champion
    assert policy.allowed_frameworks == policy.allowed_formats == ()
    assert not policy.require_signature
    assert policy.is_protected("production")
    assert not policy.is_protected("staging")


def test_every_key_is_read() -> None:
    policy = _policy(
        protected_aliases=["production", "prod-eu"],
        required_card_fields=["owners"],
        metric_gates=["auc >= 0.8", "rmse<3", "accuracy == 1"],
        challenger_beats_champion=True,
        allowed_frameworks=["sklearn", "onnx"],
        allowed_formats=["skops", "onnx"],
        require_signature=True,
        personal_data={"email": "hash"},
        retention="30d",
    )

    assert policy.protected_aliases == ("production", "prod-eu")
    assert policy.required_card_fields == ("owners",)
    assert policy.metric_gates == (
        MetricGate("auc", ">=", 0.8),
        MetricGate("rmse", "<", 3.0),
        MetricGate("accuracy", "==", 1.0),
    )
    assert [str(gate) for gate in policy.metric_gates] == [
        "auc >= 0.8",
        "rmse < 3",
        "accuracy == 1",
    ]
    assert policy.challenger_beats_champion
    assert policy.allowed_frameworks == ("sklearn", "onnx")
    assert policy.allowed_formats == ("skops", "onnx")
    assert policy.require_signature


def test_no_protected_alias_at_all() -> None:
    assert not _policy(protected_aliases=[]).is_protected("production")


@pytest.mark.parametrize(
    ("op", "value", "holds"),
    [(">=", 0.8, True), (">=", 0.79, False), (">", 0.8, False), ("<=", 0.8, True),
     ("<", 0.79, True), ("==", 0.8, True)],
    ids=["ge", "ge-below", "gt-equal", "le", "lt", "eq"],
)  # fmt: skip
def test_metric_gates_compare(op: str, value: float, holds: bool) -> None:
    assert MetricGate("auc", op, 0.8).holds(value) is holds


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"protect": ["production"]}, "unknown key 'protect'"),
        ({"protected_aliases": "production"}, "protected_aliases must be a list"),
        ({"protected_aliases": ["bad alias"]}, "invalid alias in"),
        ({"required_card_fields": ["purpose"]}, "'purpose', which is not a card field"),
        ({"metric_gates": ["auc => 0.8"]}, "'auc => 0.8' must look like"),
        ({"metric_gates": ["auc >= high"]}, "'auc >= high' must look like"),
        ({"metric_gates": ["auc >= nan"]}, "a finite number"),
        ({"metric_gates": [0.8]}, "metric_gates must be a list of non-empty strings"),
        ({"challenger_beats_champion": "yes"}, "challenger_beats_champion must be true or false"),
        ({"allowed_frameworks": ["tensorflow"]}, "'tensorflow', which is not a framework"),
        ({"allowed_formats": [""]}, "allowed_formats must be a list of non-empty strings"),
        ({"require_signature": 1}, "require_signature must be true or false"),
    ],
    ids=[
        "unknown-key",
        "aliases-not-a-list",
        "bad-alias",
        "unknown-card-field",
        "bad-operator",
        "bad-threshold",
        "nan-threshold",
        "gate-not-text",
        "flag-not-bool",
        "unknown-framework",
        "empty-format",
        "signature-flag-not-bool",
    ],
)
def test_a_mistake_names_its_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match="governance") as caught:
        _policy(**table)

    assert message in str(caught.value)


def test_an_invalid_policy_stops_a_command_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = tmp_path / "dockyard.toml"
    config.write_text('[governance]\nmetric_gates = ["auc => 0.8"]\n')
    monkeypatch.setenv("DOCKYARD_CONFIG", str(config))

    code, out, err = run_cli(capsys, "policy", "check", "fraud:1", "--home", str(tmp_path / "h"))

    assert code == InvalidInput.exit_code
    assert out == ""
    assert err.count("\n") == 1
    assert "metric_gates entry 'auc => 0.8' must look like" in err
