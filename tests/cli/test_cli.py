"""The CLI through its real entry point: output, exit codes and one-line errors (no tracebacks)."""

from __future__ import annotations

import csv
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from clirun import run_cli as _cli
from servers import dockyard_command
from tables import write_csv as _write_csv

pytestmark = pytest.mark.usefixtures("unprotected_config")


def _register(
    capsys: pytest.CaptureFixture[str], model: Path, name: str, home: Path, *extra: str
) -> tuple[int, str, str]:
    """``dockyard models register MODEL -n NAME --reference reference.csv EXTRA --home HOME``."""
    reference = model.parent / "reference.csv"
    return _cli(
        capsys,
        "models",
        "register",
        str(model),
        "-n",
        name,
        "--reference",
        str(reference),
        *extra,
        "--home",
        str(home),
    )


@pytest.fixture
def files(
    tmp_path: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> dict[str, Path]:
    x, _ = tabular_data
    skops_file = tmp_path / "model.skops"
    skops.io.dump(logistic, skops_file)
    pickle_file = tmp_path / "model.pkl"
    pickle_file.write_bytes(pickle.dumps(logistic))
    return {
        "skops": skops_file,
        "pickle": pickle_file,
        "reference": _write_csv(tmp_path / "reference.csv", x[:100]),
        "rows": _write_csv(tmp_path / "rows.csv", x[100:140]),
    }


def test_register_list_show_alias_predict_archive(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    files: dict[str, Path],
    tmp_path: Path,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    h = ("--home", str(home))
    code, out, err = _register(
        capsys,
        files["skops"],
        "lr",
        home,
        "--metric",
        "auc=0.91",
        "--tag",
        "team=risk",
        "--alias",
        "production",
    )
    assert code == 0, err
    assert "registered lr:1 @production (sklearn" in out
    code, out, _ = _register(capsys, files["skops"], "lr", home)
    assert "registered lr:2" in out

    code, out, _ = _cli(capsys, "models", "list", *h)
    assert code == 0
    assert "lr" in out
    assert "production→1" in out

    code, out, _ = _cli(capsys, "models", "show", "lr@production", "--json", *h)
    shown = json.loads(out)
    assert shown["version"] == 1
    assert shown["metrics"] == {"auc": 0.91}
    assert shown["tags"] == {"team": "risk"}
    assert shown["signature"]["tabular"] is True
    assert [spec["name"] for spec in shown["signature"]["inputs"]][:2] == ["x0", "x1"]
    assert shown["lineage"]["data_rows"] == 100
    assert shown["allow_pickle"] is False

    code, out, _ = _cli(capsys, "models", "alias", "lr", "production", "2", *h)
    assert code == 0
    assert "lr@production → lr:2" in out

    output = tmp_path / "predictions.csv"
    code, _, err = _cli(
        capsys,
        "predict",
        "lr@production",
        "--input",
        str(files["rows"]),
        "--output",
        str(output),
        *h,
    )
    assert code == 0, err
    with output.open() as handle:
        predicted = [int(row["predict"]) for row in csv.DictReader(handle)]
    assert predicted == logistic.predict(tabular_data[0][100:140]).tolist()

    code, out, err = _cli(
        capsys, "models", "update", "lr", "--description", "fraud scores", "--tag", "owner=risk", *h
    )
    assert code == 0, err
    code, out, _ = _cli(capsys, "models", "list", *h)
    assert "fraud scores" in out

    code, _, err = _cli(capsys, "models", "archive", "lr", "2", *h)
    assert code == 5
    assert "production" in err
    code, out, _ = _cli(capsys, "models", "archive", "lr", "1", *h)
    assert code == 0
    assert "archived lr:1" in out


def test_pickle_needs_allow_pickle_which_is_recorded(
    capsys: pytest.CaptureFixture[str], home: Path, files: dict[str, Path]
) -> None:
    h = ("--home", str(home))
    code, out, err = _register(capsys, files["pickle"], "p", home)
    assert code == 2
    assert err.startswith("error: ")
    assert "--allow-pickle" in err
    assert "Traceback" not in err
    code, out, err = _register(capsys, files["pickle"], "p", home, "--allow-pickle")
    assert code == 0, err
    _, out, _ = _cli(capsys, "models", "show", "p:1", "--json", *h)
    assert json.loads(out)["allow_pickle"] is True


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (("models", "show", "ghost"), 4, "ghost"),
        (("models", "show", "bad name!"), 2, "invalid model name"),
        (("predict", "ghost:1", "--input", "nowhere.csv"), 4, "ghost"),
        (
            ("models", "register", "nowhere.skops", "-n", "m", "--reference", "nowhere.csv"),
            2,
            "nowhere.csv",
        ),
        (("models", "alias", "ghost", "production", "1"), 4, "ghost"),
    ],
    ids=["unknown-model", "bad-ref", "predict-unknown", "missing-file", "alias-unknown"],
)
def test_errors_are_one_line_with_an_exit_code(
    capsys: pytest.CaptureFixture[str], home: Path, args: tuple[str, ...], code: int, fragment: str
) -> None:
    actual, _, err = _cli(capsys, *args, "--home", str(home))
    assert actual == code, err
    assert err.startswith("error: ")
    assert fragment in err
    assert len(err.strip().splitlines()) == 1


def test_unusable_home_is_a_clear_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = _cli(capsys, "models", "list", "--home", str(blocker / "home"))
    assert code == 1
    assert "cannot use Dockyard home" in err


def test_corrupt_artifact_refuses_to_load(
    capsys: pytest.CaptureFixture[str], home: Path, files: dict[str, Path]
) -> None:
    h = ("--home", str(home))
    code, _, err = _register(capsys, files["skops"], "lr", home)
    assert code == 0, err
    _, out, _ = _cli(capsys, "models", "show", "lr:1", "--json", *h)
    digest = json.loads(out)["artifact"]["sha256"]
    blob = home / "artifacts" / digest[:2] / digest
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    code, _, err = _cli(capsys, "predict", "lr:1", "--input", str(files["rows"]), *h)
    assert code == 9
    assert digest in err
    assert str(blob) in err
    code, _, err = _cli(capsys, "serve", "lr:1", "--port", "0", *h)
    assert code == 9
    assert digest in err
    assert "Traceback" not in err


def test_unknown_alias_is_named(
    capsys: pytest.CaptureFixture[str], home: Path, files: dict[str, Path]
) -> None:
    h = ("--home", str(home))
    code, _, err = _register(capsys, files["skops"], "lr", home, "--alias", "production")
    assert code == 0, err
    for args in (("models", "show", "lr@canary"), ("serve", "lr@canary", "--port", "0")):
        code, _, err = _cli(capsys, *args, *h)
        assert code == 4
        assert "no alias 'canary'" in err
        assert "production" in err


def test_missing_optional_framework_names_the_extra(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    files: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    model = tmp_path / "model.ubj"
    model.write_bytes(b"{}")
    # A module set to None in sys.modules fails to import, exactly as an uninstalled package does.
    monkeypatch.setitem(sys.modules, "xgboost", None)
    code, _, err = _register(capsys, model, "x", home)
    assert code == 10
    assert "pip install 'dockyard[xgboost]'" in err


def test_console_script_version_and_config_show(home: Path) -> None:
    result = subprocess.run(
        [*dockyard_command(), "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.startswith("dockyard ")
    result = subprocess.run(
        [*dockyard_command(), "config", "show", "--home", str(home)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "max_body_bytes" in result.stdout
    assert "flag" in result.stdout
