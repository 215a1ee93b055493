"""The README's quickstart, run as written (only the port is changed to a free one)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from servers import Server

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"


def _quickstart_blocks() -> list[tuple[str, str]]:
    text = README.read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def test_quickstart_works_as_written(tmp_path: Path, start_server: Callable[..., Server]) -> None:
    blocks = _quickstart_blocks()
    python_blocks = [code for lang, code in blocks if lang == "python"]
    curl = next(code for lang, code in blocks if lang == "bash" and "curl" in code)
    home = tmp_path / "home"
    env = {**os.environ, "DOCKYARD_HOME": str(home)}

    registered = subprocess.run(
        [sys.executable, "-c", python_blocks[0]], env=env, capture_output=True, text=True
    )
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout.startswith("iris:1\n")

    # Auth on, as the README runs it: the server's first start makes the admin key the block
    # reads from the home.
    server = start_server(home, auth=True)
    shell = curl.split("\n", 1)[1].replace("localhost:8000", f"127.0.0.1:{server.port}")
    called = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env)
    assert called.returncode == 0, called.stderr
    assert '"name":"predict"' in called.stdout.replace(" ", "")

    client_code = python_blocks[1].replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    answered = subprocess.run(
        [sys.executable, "-c", client_code],
        env={**env, "DOCKYARD_API_KEY": server.admin_key},
        capture_output=True,
        text=True,
    )
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip() == "[0]"
