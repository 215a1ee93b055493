"""What the ``dockyard`` command imports: a fresh process per case, as a user runs it.

``--version`` and ``--help`` must not import a web framework, the registry's database layer, an ML
framework or an HTTP client; ``models list`` only the database layer; ``predict`` with a
scikit-learn model no other framework (skops's estimator scan used to import torch). Modules, not
seconds, are asserted: timings are noisy on shared machines (``benchmarks/cli_timings.py`` measures
them).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import dockyard
from dockyard.cli import remote
from servers import dockyard_command
from tables import write_csv

RUN_AND_LIST_MODULES = """
import json, sys
out, argv = sys.argv[1], sys.argv[2:]
code = 0
if argv != ["--import-only"]:
    from dockyard.cli.main import run
    try:
        run(argv)
    except SystemExit as exc:
        code = exc.code or 0
else:
    import dockyard.cli.main
with open(out, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""

HEAVY = (
    "alembic",
    "cryptography",
    "fastapi",
    "httpx",
    "lightgbm",
    "numpy",
    "onnx",
    "onnxruntime",
    "pandas",
    "rich.progress",
    "rich.table",
    "scipy",
    "sklearn",
    "skops",
    "sqlalchemy",
    "starlette",
    "torch",
    "uvicorn",
    "xgboost",
)
"""Modules no command may import before it runs (each with its submodules)."""

OTHER_FRAMEWORKS = ("lightgbm", "onnx", "onnxruntime", "torch", "xgboost")
SERVING = ("alembic", "fastapi", "httpx", "starlette", "uvicorn")


def _loaded(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` are among ``modules`` (a package counts when a submodule is there)."""
    found = set(modules)
    return [
        name for name in packages if name in found or any(m.startswith(f"{name}.") for m in found)
    ]


def _run(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    """``dockyard ARGV`` in a new interpreter: its exit code and every module it imported."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_")}
    subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST_MODULES, str(out), *argv],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    )
    result = json.loads(out.read_text())
    return result["code"], result["modules"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--import-only"],
        ["--version"],
        ["--help"],
        ["models", "--help"],
        ["predict", "--help"],
        ["serve", "--help"],
        ["keys", "--help"],
        ["loadtest", "--help"],
        ["capacity", "--help"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_starting_the_cli_imports_nothing_heavy(tmp_path: Path, argv: list[str]) -> None:
    code, modules = _run(tmp_path, *argv)

    assert code == 0
    assert _loaded(modules, HEAVY) == []


def test_import_dockyard_leaves_the_client_for_later() -> None:
    script = (
        "import sys, dockyard; before = 'httpx' in sys.modules or 'numpy' in sys.modules; "
        "from dockyard import Client; print(before, Client.__module__, 'httpx' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "dockyard.client", "True"]


def test_the_url_option_names_the_clients_key_variable() -> None:
    from dockyard.client import API_KEY_ENV

    assert remote.API_KEY_ENV == API_KEY_ENV


@pytest.fixture
def registered(
    tmp_path: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> tuple[Path, Path]:
    """A home with one scikit-learn model (``fraud``), and a CSV of 5 rows to score."""
    x, _ = tabular_data
    home = tmp_path / "home"
    dockyard.register_model(logistic, "fraud", reference_data=x[:100], home=home)
    return home, write_csv(tmp_path / "rows.csv", x[:5])


def test_models_list_imports_the_database_layer_only(
    tmp_path: Path, registered: tuple[Path, Path]
) -> None:
    home, _ = registered

    code, modules = _run(tmp_path, "models", "list", "--home", str(home))

    assert code == 0
    # The registry is at its newest revision already: SQLAlchemy reads it, Alembic stays out.
    assert set(_loaded(modules, HEAVY)) <= {"sqlalchemy", "rich.table"}


def test_predict_with_a_sklearn_model_imports_no_other_framework(
    tmp_path: Path, registered: tuple[Path, Path]
) -> None:
    home, rows = registered
    output = tmp_path / "predictions.csv"

    code, modules = _run(
        tmp_path, "predict", "fraud", "--input", str(rows), "-o", str(output), "--home", str(home)
    )

    assert code == 0
    assert len(output.read_text().splitlines()) == 1 + 5
    assert _loaded(modules, ("sklearn", "skops")) == ["sklearn", "skops"]
    assert _loaded(modules, OTHER_FRAMEWORKS + SERVING) == []


def test_the_command_closes_the_registry_before_it_exits(registered: tuple[Path, Path]) -> None:
    """The command skips the interpreter's final sweep (``gc.freeze`` at exit) only after
    collecting what it left: SQLite removes its ``-wal`` file when the last connection closes."""
    home, rows = registered
    gc.collect()  # this process's registration is done with the database too
    assert not list(home.glob("*-wal"))

    for args in (["models", "list"], ["predict", "fraud", "--input", str(rows)]):
        subprocess.run(
            [*dockyard_command(), *args, "--home", str(home)],
            capture_output=True,
            check=True,
            timeout=120,
        )
        assert not list(home.glob("*-wal")), args
