"""A port already taken stops ``dockyard serve`` before anything loads: one line naming the address,
exit 7 (unavailable), no "serving" banner — with one worker and with many."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from dockyard.errors import Unavailable
from servers import dockyard_command

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_taken_port_is_one_line_and_exit_7(served: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*dockyard_command(), "serve", "--port", str(port), "--workers", workers],
            env={**os.environ, "DOCKYARD_HOME": str(served)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == Unavailable.exit_code == 7
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
