"""`make demo`, the README's first command, as a user runs it: it registers the example model in
the demo's own home, prints a curl command that works, and serves until stopped."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from servers import free_port

pytestmark = pytest.mark.e2e
CHECKOUT = Path(__file__).resolve().parents[2]


def test_the_demo_home_is_inside_the_checkout() -> None:
    dry = subprocess.run(
        ["make", "-n", "-C", str(CHECKOUT), "demo"], capture_output=True, text=True, check=True
    )
    commands = [line for line in dry.stdout.splitlines() if "dockyard" in line]
    assert commands
    for command in commands:
        assert f"DOCKYARD_HOME={CHECKOUT}/demo-home " in command
    assert "/demo-home/" in (CHECKOUT / ".gitignore").read_text().splitlines()


@pytest.mark.timeout(300)
def test_make_demo_serves_what_it_prints(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "MAKE"))}
    env["HOME"] = str(tmp_path)  # where ~/.dockyard would be
    demo = subprocess.Popen(
        ["make", "-C", str(CHECKOUT), "demo", f"PORT={port}", f"DEMO_HOME={tmp_path / 'demo'}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    printed: list[str] = []
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 240
        for line in demo.stdout:
            printed.append(line)
            if (
                "Uvicorn running" in line
                or "serving" in line.lower()
                or time.monotonic() > deadline
            ):
                break
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            time.sleep(0.2)
        output = "".join(printed)
        curl = re.search(r"^export DOCKYARD_API_KEY=.*?\n\n", output, flags=re.S | re.M)
        assert curl is not None, output
        called = subprocess.run(
            ["bash", "-c", curl.group(0)], env=env, capture_output=True, text=True, timeout=30
        )
        assert called.returncode == 0, called.stderr
        assert '"name":"predict"' in called.stdout.replace(" ", ""), called.stdout
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGTERM)
        demo.communicate(timeout=30)  # reads the rest and closes the pipe
    assert (tmp_path / "demo" / "dockyard.db").is_file()
    assert not (tmp_path / ".dockyard").exists()
