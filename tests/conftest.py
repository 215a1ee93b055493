"""Shared fixtures: a fresh Dockyard home, small trained models, and real servers on free ports."""

from __future__ import annotations

import functools
import logging
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx._transports.default
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import Engine

from chaos import table as chaos_table
from dockyard.config import load_settings
from dockyard.registry import db
from dockyard.registry.store import RegistryStore
from dockyard.reliability import logs
from dockyard.services.workspace import Workspace
from servers import Server

_create_ssl_context = httpx._transports.default.create_ssl_context


@functools.cache
def _verifying_context() -> ssl.SSLContext:
    return _create_ssl_context()


def _shared_default_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
    """httpx builds a new SSL context for every client, loading certifi's whole CA bundle: about
    50 ms of CPU for each ``httpx.get`` the tests make (hundreds, and a server's readiness poll
    every 50 ms), whatever the URL's scheme. The suite shares one for the default settings; a
    test that passes its own ``verify`` gets what it asked for."""
    if verify is True and cert is None and trust_env:
        return _verifying_context()
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


httpx._transports.default.create_ssl_context = _shared_default_context  # type: ignore[assignment]


_TESTS = str(Path(__file__).resolve().parent)
_opened_by_tests: list[Workspace | RegistryStore | Engine] = []
"""Registries the tests' own code opened (not Dockyard's, which closes its own), to be closed."""


def _owned_by_the_tests(opener: Callable[..., Any]) -> Callable[..., Any]:
    def opening(*args: Any, **kwargs: Any) -> Any:
        opened = opener(*args, **kwargs)
        if sys._getframe(1).f_code.co_filename.startswith(_TESTS):
            _opened_by_tests.append(opened)
        return opened

    return opening


# Test code opens registries all over (``open_unprotected(home)``, module fixtures); each is closed
# when the test (or the module, for one a module fixture opened) ends, as a command closes its own:
# an engine left to the collector holds its SQLite file open, and Python 3.13 warns about it.
Workspace.open = staticmethod(_owned_by_the_tests(Workspace.open))  # type: ignore[method-assign]
RegistryStore.open = staticmethod(_owned_by_the_tests(RegistryStore.open))  # type: ignore[method-assign]
db.open_engine = _owned_by_the_tests(db.open_engine)


def _close_opened_since(count: int) -> None:
    while len(_opened_by_tests) > count:
        opened = _opened_by_tests.pop()
        if isinstance(opened, Engine):
            opened.dispose()
        else:
            opened.close()


@pytest.fixture(autouse=True, scope="module")
def _registries_closed_after_the_module() -> Iterator[None]:
    start = len(_opened_by_tests)
    yield
    _close_opened_since(start)


@pytest.fixture(autouse=True)
def _registries_closed_after_the_test() -> Iterator[None]:
    start = len(_opened_by_tests)
    yield
    _close_opened_since(start)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what an in-process ``dockyard serve`` (one that stops before serving) does to this
    process's logging: its queue, its level, uvicorn's loggers, captured warnings."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    if root.handlers == handlers:
        return
    logs.shutdown()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers.clear()
        named.propagate = True
    logging.captureWarnings(False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def unprotected_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file without protected aliases, named by DOCKYARD_CONFIG for the commands and
    servers the test starts: for tests of other things that move ``production`` directly."""
    path = tmp_path / "unprotected.toml"
    path.write_text("[governance]\nprotected_aliases = []\n")
    monkeypatch.setenv("DOCKYARD_CONFIG", str(path))
    return path


@pytest.fixture
def workspace(home: Path) -> Iterator[Workspace]:
    with Workspace.open(load_settings({"home": home}, env={})) as opened:
        yield opened


@pytest.fixture(scope="session")
def tabular_data() -> tuple[np.ndarray, np.ndarray]:
    """600 rows of 30 features with a learnable binary label."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 30))
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.int64)
    return x, y


@pytest.fixture(scope="session")
def logistic(tabular_data: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = tabular_data
    return LogisticRegression(max_iter=500).fit(x, y)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Factory: start ``dockyard serve ARGS`` on a home; every server is stopped afterwards."""
    servers: list[Server] = []

    def start(home: Path, *args: str, auth: bool = False) -> Server:
        server = Server(home, list(args), tmp_path / f"server-{len(servers)}.log", auth=auth)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


_chaos_rows: list[chaos_table.Row] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _chaos_rows.extend(chaos_table.rows_of(report))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    chaos_table.print_table(terminalreporter, _chaos_rows)
