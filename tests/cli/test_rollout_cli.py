"""``dockyard rollout start|status|promote|abort`` on a real home: what each prints, its exit code
on a refusal (one line on stderr), and a protected alias promoted only through its request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from clirun import run_cli
from dockyard.errors import Conflict, InvalidInput
from dockyard.registry.refs import ModelRef
from dockyard.security.principals import local_user
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace


@pytest.fixture
def rolled(
    workspace: Workspace, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, Any]
) -> Path:
    """A home with ``lr`` 1 on ``production`` and ``staging``, and 2 to roll out."""
    for _ in range(2):
        register(workspace, logistic, Registration("lr", reference_data=tabular_data[0][:20]))
    workspace.store.set_alias("lr", "production", 1)
    workspace.store.set_alias("lr", "staging", 1)
    return workspace.home.root


def test_start_status_and_abort(capsys: pytest.CaptureFixture[str], rolled: Path) -> None:
    home = ("--home", str(rolled))
    code, out, err = run_cli(
        capsys,
        "rollout",
        "start",
        "lr",
        "--version",
        "2",
        "--canary",
        "10",
        "--sticky",
        "user",
        *home,
    )
    assert (code, err) == (0, "")
    assert (
        out == "rollout 1 started: canary 10% to lr:2 beside lr:1 (@production), sticky on user\n"
    )

    code, out, err = run_cli(capsys, "rollout", "status", "lr", "--json", *home)
    assert code == 0, err
    assert json.loads(out) | {"started_at": None} == {
        "id": 1,
        "model": "lr",
        "alias": "production",
        "stable": 1,
        "candidate": 2,
        "mode": "canary",
        "percent": 10,
        "sticky": "user",
        "state": "active",
        "started_by": local_user().actor,
        "started_at": None,
        "ended_by": None,
        "ended_at": None,
        "reason": None,
    }

    code, out, err = run_cli(capsys, "rollout", "abort", "lr", "--comment", "wrong build", *home)
    assert (code, out, err) == (0, "rollout 1 aborted: lr@production stays on 1\n", "")
    code, out, _ = run_cli(capsys, "rollout", "status", "lr", *home)
    assert out.splitlines()[1] == f"ended by {local_user().actor}: wrong build"


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("--version", "2"), InvalidInput, "give one of --canary PERCENT or --shadow"),
        (("--version", "2", "--canary", "5", "--shadow"), InvalidInput, "give one of"),
        (("--version", "2", "--canary", "150"), InvalidInput, "1 to 99"),
        (("--version", "1", "--canary", "5"), Conflict, "points at lr:1 already"),
    ],
    ids=["neither", "both", "percent", "same-version"],
)
def test_a_bad_start_is_one_line_on_stderr(
    capsys: pytest.CaptureFixture[str],
    rolled: Path,
    args: tuple[str, ...],
    error: type[Exception],
    message: str,
) -> None:
    code, out, err = run_cli(capsys, "rollout", "start", "lr", *args, "--home", str(rolled))

    assert code == error.exit_code
    assert out == ""
    assert message in err
    assert err.count("\n") == 1


def test_a_shadow_promoted_on_an_unprotected_alias_moves_it(
    capsys: pytest.CaptureFixture[str], rolled: Path, workspace: Workspace
) -> None:
    home = ("--home", str(rolled))
    start = ("rollout", "start", "lr", "--version", "2", "--shadow", "--alias", "staging")
    code, out, _ = run_cli(capsys, *start, *home)
    assert out == "rollout 1 started: shadow of every request, lr:2 beside lr:1 (@staging)\n"

    code, out, err = run_cli(capsys, "rollout", "promote", "lr", *home)

    assert (code, out, err) == (0, "rollout 1 promoted: lr@staging → lr:2\n", "")
    assert workspace.store.resolve(ModelRef("lr", alias="staging")).version == 2


def test_promoting_a_protected_alias_goes_through_its_gates(
    capsys: pytest.CaptureFixture[str], rolled: Path, workspace: Workspace
) -> None:
    """The default policy wants a model card: the promotion request is refused by that gate, as
    ``dockyard promote`` would be, and nothing moves."""
    home = ("--home", str(rolled))
    run_cli(capsys, "rollout", "start", "lr", "--version", "2", "--canary", "10", *home)

    code, out, err = run_cli(capsys, "rollout", "promote", "lr", *home)

    assert (code, out) == (Conflict.exit_code, "")
    assert err.startswith("error: cannot promote lr:2 to @production: gate ")
    assert workspace.store.resolve(ModelRef("lr", alias="production")).version == 1
    code, out, _ = run_cli(capsys, "rollout", "status", "lr", *home)
    assert out.startswith("rollout 1: active")
