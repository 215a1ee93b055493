"""A real local Ray cluster for the ray backend's tests: one head on 127.0.0.1, 2 CPUs.

Started with ``ray start --head --block`` in a session of its own, so that stopping it ends the
head's processes and the workers its raylet started (and nothing of another test process's
cluster: ``ray stop`` would end every Ray process of the machine). Every port it binds is a
free one picked here, so two test processes may each run one. Ray is pinned to loopback with
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its node address stays 127.0.0.1) and reports no usage
statistics; ``foreign_connections`` lists any TCP connection of its processes (or of other
processes given) that leaves loopback, read from ``ss -tnp``. It takes Ray's token
authentication with a token of its own (``auth_env``: what a server joining it needs). A
``ServeProbe`` reads what Ray Serve reports of its applications; ``replica_pids`` finds their
replicas' processes by title.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from servers import free_port

RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
STARTED = "Ray runtime started"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
LOOPBACK = re.compile(r"^(?:127\.\d+\.\d+\.\d+|\[?::1\]?|\[?::ffff:127\.\d+\.\d+\.\d+\]?)$")


def ray_env() -> dict[str, str]:
    """This process's environment with Ray pinned to loopback: for a Ray head started here (a
    server pins the Ray it starts or joins on this machine itself)."""
    return {**os.environ, **RAY_ENV}


class RayCluster:
    """``ray start --head`` on 127.0.0.1 with ``cpus`` CPUs; ``address`` is its GCS."""

    def __init__(self, cpus: int = 2) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's socket paths must stay short (the AF_UNIX limit): a folder right under /tmp.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
        # Token authentication (Ray's default for a new cluster) with a token of this cluster's
        # own: nothing read from or written to ~/.ray, shared by every Ray of this user.
        token = self.temp_dir / "auth_token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        self.auth_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        """What a process that joins this cluster needs in its environment to be let in."""
        self.env = {**ray_env(), **self.auth_env}
        """The head's environment, pinned to loopback; a probe's too."""
        ray = Path(sys.executable).with_name("ray")
        command = [
            str(ray),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
        ]
        self.log = self.temp_dir / "head.log"
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            command,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while STARTED not in self.log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.log.read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"the Ray head did not start:\n{output}")
            time.sleep(0.2)

    def pids(self) -> set[int]:
        """Every live process of this cluster (the head's session; zombies left out)."""
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getsid(int(entry.name)) != self.process.pid:
                        continue
                    state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
                except (OSError, IndexError):
                    continue
                if state != "Z":
                    found.add(int(entry.name))
        return found

    def stop(self) -> None:
        """End every process of the cluster; remove its folder. SIGKILL, to the whole session:
        ``ray start --block`` catches SIGTERM and was still running 20 s after it, and a
        throwaway cluster has nothing to save."""
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
            self.process.poll()  # reaped: a zombie head would still count as the session's
        self.process.wait()
        self._log_file.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def tcp_connections(pids: Iterable[int]) -> list[str]:
    """The TCP connections (``ss -tnp`` lines) of processes ``pids``."""
    wanted = set(pids)
    output = subprocess.run(
        ["ss", "-tnpH"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue
        owners = {int(pid) for pid in re.findall(r"pid=(\d+)", " ".join(fields[5:]))}
        if owners & wanted:
            found.append(line)
    return found


def foreign_connections(pids: Iterable[int]) -> list[str]:
    """TCP connections (``ss -tnp``) of processes ``pids`` whose either end is not loopback."""
    foreign = []
    for line in tcp_connections(pids):
        fields = line.split()
        hosts = [address.rpartition(":")[0] for address in (fields[3], fields[4])]
        if not all(LOOPBACK.match(host) for host in hosts):
            foreign.append(line)
    return foreign


def process_titles(pids: Iterable[int]) -> dict[int, str]:
    """The command line (a Ray worker's title: ``ray::ServeReplica:APP:DEPLOYMENT``) of each
    live process of ``pids``."""
    titles = {}
    for pid in pids:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        titles[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return titles


def replica_pids(pids: Iterable[int], app: str) -> set[int]:
    """Which of ``pids`` are Ray Serve replicas of application ``app``."""
    prefix = f"ray::ServeReplica:{app}:"
    return {pid for pid, title in process_titles(pids).items() if title.startswith(prefix)}


PROBE = """
import json, sys
import ray
from ray import serve

ray.init(address=sys.argv[1], namespace="dockyard-tests", log_to_driver=False,
         logging_level="ERROR")
print("ready", flush=True)
value = lambda item: str(getattr(item, "value", item))
for _ in sys.stdin:
    applications = {
        name: {
            "status": value(app.status),
            "message": app.message,
            "deployments": {
                deployment: {
                    "status": value(status.status),
                    "replicas": {value(k): n for k, n in status.replica_states.items()},
                }
                for deployment, status in app.deployments.items()
            },
        }
        for name, app in serve.status().applications.items()
    }
    print(json.dumps(applications), flush=True)
"""


class ServeProbe:
    """A Ray driver of its own (a subprocess: Ray stays out of the test process) that reads
    what Ray Serve reports of the cluster's applications, on each call."""

    def __init__(self, cluster: RayCluster) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", PROBE, cluster.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=cluster.env,
        )
        self._read()  # "ready"

    def _read(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the Serve probe exited ({self.process.wait()})")
        return line

    def applications(self) -> dict[str, Any]:
        """``{app: {status, message, deployments: {name: {status, replicas: {state: n}}}}}``."""
        assert self.process.stdin is not None
        self.process.stdin.write("status\n")
        self.process.stdin.flush()
        found: dict[str, Any] = json.loads(self._read())
        return found

    def running_replicas(self, app: str) -> int:
        """How many replicas of ``app``'s deployments Serve reports RUNNING (0: no such app)."""
        status = self.applications().get(app)
        if status is None:
            return 0
        return sum(d["replicas"].get("RUNNING", 0) for d in status["deployments"].values())

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
