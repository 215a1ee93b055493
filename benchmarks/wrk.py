"""Closed-loop runs with wrk (C, one thread): POST a fixed V2 body on N keep-alive connections.

wrk is installed with apt-get when missing; its Lua ``done`` hook prints one JSON line with the
counts and latency percentiles, so nothing is scraped from its human-readable report. The
``Authorization`` header (Dockyard's API key) comes from ``BENCH_AUTH`` in wrk's environment, never
from its command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

LUA = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth ~= nil and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"status":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"max_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
MARKER = "BENCH_JSON "
TIMEOUT_SLACK_S = 30.0
INSTALL_TIMEOUT_S = 600.0


def ensure_wrk() -> str | None:
    """The path to wrk, installing the Debian package if it is missing; None if that fails."""
    found = shutil.which("wrk")
    if found:
        return found
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        try:
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                timeout=INSTALL_TIMEOUT_S,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except (OSError, subprocess.SubprocessError):
            return None
    return shutil.which("wrk")


def write_script(folder: Path) -> Path:
    path = folder / "post.lua"
    path.write_text(LUA)
    return path


def closed_loop(
    wrk: str,
    script: Path,
    url: str,
    body_file: Path,
    *,
    duration: float,
    connections: int,
    authorization: str | None = None,
) -> dict[str, Any]:
    """One wrk run; the result has the same keys as ``loadgen``'s closed loop. ``authorization``:
    the ``Authorization`` header's value, sent with every request."""
    seconds = max(1, round(duration))
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + TIMEOUT_SLACK_S,
        env={"BENCH_BODY_FILE": str(body_file), "BENCH_AUTH": authorization or ""},
        check=False,
    )
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith(MARKER)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    raw = json.loads(line[len(MARKER) :])
    errors = raw["status"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    elapsed = raw["duration_us"] / 1e6
    return {
        "mode": "closed",
        "tool": "wrk",
        "connections": connections,
        "requests": raw["requests"],
        "ok": raw["requests"] - raw["status"],
        "errors": errors,
        "unfinished": 0,
        "rps": (raw["requests"] - raw["status"]) / elapsed,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
    }
