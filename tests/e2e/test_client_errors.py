"""``dockyard.Client`` speaks Dockyard's errors: a server's error answers become the matching
``DockyardError`` with the server's message, and a server that cannot be reached is one clear
``NotReady`` naming the URL (exit 7 through the CLI), never a raw httpx exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clirun import run_cli
from dockyard import Client
from dockyard.errors import InvalidInput, NotFound, NotReady
from servers import Server, free_port

pytestmark = pytest.mark.e2e


def test_error_answers_become_dockyard_errors(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served)
    with Client(server.url) as client:
        with pytest.raises(NotFound, match="churn"):
            client.infer("churn", np.zeros((1, 30)))
        with pytest.raises(InvalidInput, match="input-0"):
            client.infer("lr", np.zeros((1, 3)))
        with pytest.raises(NotFound, match="no version 9"):
            client.get_version("lr", 9)
        assert client.infer("lr", np.zeros((1, 30)))["predict"].shape == (1,)


def test_a_server_that_cannot_be_reached_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, api_key="dk_000000000000_x") as client:
        assert not client.is_live()
        assert not client.is_ready()
        with pytest.raises(NotReady, match=f"cannot reach {url}"):
            client.infer("lr", np.zeros((1, 30)))
        with pytest.raises(NotReady, match=f"cannot reach {url}"):
            client.list_models()

    monkeypatch.setenv("DOCKYARD_API_KEY", "dk_000000000000_x")
    code, _, err = run_cli(capsys, "models", "list", "--url", url)
    assert code == NotReady.exit_code
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"error: cannot reach {url}")
