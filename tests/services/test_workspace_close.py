"""Whoever opens a workspace closes it: nothing the registry opened stays open after its owner is
done (a CLI command, the Python API, a ``with`` block), on any Python.

An unclosed SQLite connection keeps its database file open until the collector frees its engine
(and Python 3.13 warns about it, an error in this suite). These tests run with the collector off,
so a leaked connection shows up as open file descriptors that pile up, one set per opening.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import dockyard
from clirun import run_cli
from dockyard.config import load_settings
from dockyard.services.workspace import Workspace

OPENINGS = 20


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def _opened_and_closed(times: int, open_once: Callable[[], object]) -> int:
    """Open files added by ``times`` openings (after a first one, which may open for good what
    every later one shares: a logging handler, a module's cache)."""
    open_once()
    before = _open_files()
    for _ in range(times):
        open_once()
    return _open_files() - before


def test_a_workspace_closed_after_use_leaves_no_file_open(home: Path, no_collector: None) -> None:
    settings = load_settings({"home": home}, env={})

    def use() -> None:
        with Workspace.open(settings) as workspace:
            workspace.store.list_models()
            workspace.keys.all()

    assert _opened_and_closed(OPENINGS, use) == 0


def test_a_workspace_left_open_keeps_its_files_open_until_collected(
    home: Path, no_collector: None
) -> None:
    """The leak the tests above rule out, shown: the same use without closing."""
    settings = load_settings({"home": home}, env={})

    def use() -> None:
        Workspace.open(settings).store.list_models()

    assert _opened_and_closed(OPENINGS, use) >= OPENINGS


def test_cli_commands_close_their_workspace(
    home: Path, no_collector: None, capsys: pytest.CaptureFixture[str]
) -> None:
    def command() -> None:
        code, _, err = run_cli(capsys, "models", "list", "--home", str(home))
        assert code == 0, err
        code, _, err = run_cli(capsys, "audit", "verify", "--home", str(home))
        assert code == 0, err

    assert _opened_and_closed(OPENINGS, command) == 0


def test_the_python_api_closes_its_workspace(home: Path, no_collector: None) -> None:
    x = np.random.default_rng(0).normal(size=(60, 3))
    model = LogisticRegression().fit(x, (x[:, 0] > 0).astype(np.int64))
    dockyard.register_model(model, "lr", reference_data=x, home=home)

    def load() -> None:
        dockyard.load_model("lr:1", home=home).predict(x[:2])

    assert _opened_and_closed(OPENINGS // 2, load) == 0
