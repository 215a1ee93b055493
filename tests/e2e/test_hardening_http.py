"""Hardening of a real server against hostile HTTP: code-running registration options, cross-site
requests and DNS rebinding, oversized and abandoned uploads, oversized and slow request heads."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import select
import signal
import socket
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from dockyard.config import load_settings
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from servers import Server, dockyard_command

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
EVIL_HOST = "evil.example"
EVIL_ORIGIN = "http://evil.example"
INFER = "/v2/models/lr/infer"


class Marker:
    """A pickle that, when unpickled, creates the file ``path`` (a shell command it runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def evil_skops(path: Path, marker: Path) -> Path:
    """A skops file whose only object is ``posix.system("touch marker")``: it runs when loaded
    with ``posix.system`` trusted."""
    command = {
        "__class__": "str",
        "__module__": "builtins",
        "__loader__": "JsonNode",
        "content": json.dumps(f"touch {marker}"),
        "is_json": True,
        "__id__": 2,
    }
    schema = {
        "__class__": "system",
        "__module__": "posix",
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [command],
            "__id__": 1,
        },
        "__id__": 0,
        "protocol": 2,
        "_skops_version": skops.__version__,
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(schema))
    return path


def _csv(rows: np.ndarray) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([f"x{i}" for i in range(rows.shape[1])])
    writer.writerows(rows.tolist())
    return buffer.getvalue().encode()


def _infer_body(rows: np.ndarray) -> bytes:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    return json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()


def _blobs(home: Path) -> set[str]:
    return {path.name for path in (home / "artifacts").glob("??/*")}


def _leftovers(home: Path) -> list[Path]:
    """Staging folders and unfinished blob writes (anything but the staging lock)."""
    staging = [p for p in (home / "tmp").glob("*") if p.name != ".lock"]
    return [*staging, *(home / "artifacts").glob("??/.tmp*")]


@pytest.fixture
def served(
    home: Path, logistic: LogisticRegression, tabular_data: tuple[np.ndarray, np.ndarray]
) -> Path:
    """A home with ``lr`` version 1 under the ``production`` alias."""
    workspace = Workspace.open(load_settings({"home": home}, env={}))
    register(
        workspace,
        logistic,
        Registration("lr", reference_data=tabular_data[0][:50], alias="production"),
    )
    return home


class Raw:
    """One TCP connection to the server, spoken to byte by byte."""

    def __init__(self, server: Server, opened: list[socket.socket]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        opened.append(self.sock)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_until_answered(self, pieces: Iterable[bytes]) -> int:
        """Send pieces until the server answers or hangs up; return the bytes sent."""
        sent = 0
        for piece in pieces:
            try:
                self.sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if select.select([self.sock], [], [], 0.02)[0]:
                break
        return sent

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a whole response: {self.buffer!r}")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed in the middle of a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def is_closed(self, within: float) -> bool:
        self.sock.settimeout(within)
        try:
            return not self._fill()
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


@pytest.fixture
def connect() -> Iterator[Callable[[Server], Raw]]:
    """Factory: a raw connection to a server; all are closed after the test."""
    opened: list[socket.socket] = []
    yield lambda server: Raw(server, opened)
    for sock in opened:
        sock.close()


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# Item 1: registration options that run the model file's code


def test_allow_pickle_over_http_is_refused_before_the_pickle_runs(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    marker = tmp_path / "pwned"
    blobs = _blobs(served)

    for value in ("true", "1", "yes", "True"):
        answer = httpx.post(
            f"{server.url}/api/models",
            data={"name": "evil", "allow_pickle": value},
            files={
                "model": ("model.pkl", pickle.dumps(Marker(marker))),
                "reference": ("r.csv", _csv(tabular_data[0][:20])),
            },
            timeout=60,
        )

        assert not marker.exists()
        assert answer.status_code == 403, answer.text
        assert "allow_pickle" in answer.json()["error"]
        assert "dockyard models register" in answer.json()["error"]
        assert "--allow-pickle" in answer.json()["error"]
    assert _blobs(served) == blobs
    assert _leftovers(served) == []


def test_trusted_types_over_http_are_refused_before_the_skops_file_runs(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    marker = tmp_path / "pwned"
    model = evil_skops(tmp_path / "model.skops", marker)
    blobs = _blobs(served)

    answer = httpx.post(
        f"{server.url}/api/models",
        data={"name": "evil", "trusted_types": '["posix.system"]'},
        files={
            "model": ("model.skops", model.read_bytes()),
            "reference": ("r.csv", _csv(tabular_data[0][:20])),
        },
        timeout=60,
    )

    assert not marker.exists()
    assert answer.status_code == 403, answer.text
    assert "trusted_types" in answer.json()["error"]
    assert "--trusted-type" in answer.json()["error"]
    assert _blobs(served) == blobs
    schema = httpx.get(f"{server.url}/openapi.json").json()
    fields = schema["paths"]["/api/models"]["post"]["requestBody"]["content"][
        "multipart/form-data"
    ]["schema"]["properties"]
    assert "allow_pickle" not in fields
    assert "trusted_types" not in fields


def test_a_pickle_without_allow_pickle_is_never_unpickled(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Marker(marker))

    for name in ("model.pkl", "model.joblib", "model.skops"):
        answer = httpx.post(
            f"{server.url}/api/models",
            data={"name": "evil", "allow_pickle": "false", "trusted_types": "[]"},
            files={"model": (name, evil), "reference": ("r.csv", _csv(tabular_data[0][:20]))},
            timeout=60,
        )
        assert answer.status_code == 400, answer.text
    assert not marker.exists()

    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    fine = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr", "allow_pickle": "false", "trusted_types": "[]"},
        files={
            "model": ("model.skops", model.read_bytes()),
            "reference": ("r.csv", _csv(tabular_data[0][:20])),
        },
        timeout=60,
    )
    assert fine.status_code == 201, fine.text


# Item 2: cross-site requests and DNS rebinding


def test_cross_site_requests_that_change_state_are_refused(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    alias = f"{server.url}/api/models/lr/aliases/staging"

    simple = httpx.put(
        alias,
        content=b'{"version": 1}',
        headers={"Content-Type": "text/plain", "Origin": EVIL_ORIGIN},
    )
    assert simple.status_code == 403, simple.text
    assert "Origin" in simple.json()["error"]
    fetched = httpx.put(alias, json={"version": 1}, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetched.status_code == 403, fetched.text
    assert "Sec-Fetch-Site" in fetched.json()["error"]
    deleted = httpx.delete(
        f"{server.url}/api/models/lr/aliases/production", headers={"Origin": EVIL_ORIGIN}
    )
    assert deleted.status_code == 403
    plain = httpx.put(alias, content=b'{"version": 1}', headers={"Content-Type": "text/plain"})
    assert plain.status_code == 400
    assert "application/json" in plain.json()["error"]
    assert httpx.get(f"{server.url}/api/models").json()[0]["aliases"] == {"production": 1}

    own = httpx.put(alias, json={"version": 1}, headers={"Origin": server.url})
    assert own.status_code == 200, own.text
    assert httpx.put(alias, json={"version": 1}).status_code == 200

    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    form = {
        "data": {"name": "lr"},
        "files": {
            "model": ("model.skops", model.read_bytes()),
            "reference": ("r.csv", _csv(tabular_data[0][:20])),
        },
    }
    port = server.port
    for headers in (
        {"Host": f"{EVIL_HOST}:{port}", "Origin": f"{EVIL_ORIGIN}:{port}"},
        {"Origin": f"{EVIL_ORIGIN}:{port}"},
        {"Origin": "null"},
    ):
        refused = httpx.post(f"{server.url}/api/models", headers=headers, timeout=60, **form)
        assert refused.status_code == 403, (headers, refused.text)
    versions = httpx.get(f"{server.url}/api/models/lr").json()["versions"]
    assert [v["version"] for v in versions] == [1]


def test_a_foreign_host_is_refused_everywhere(
    served: Path,
    start_server: Callable[..., Server],
    tabular_data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKYARD_ALLOWED_HOSTS", "dockyard.internal, *.models.example")
    server = start_server(served, "--workers", "1")
    port = server.port
    body = _infer_body(tabular_data[0][:2])
    requests = [
        ("GET", "/v2/health/live", b""),
        ("GET", "/v2/health/ready", b""),
        ("POST", INFER, body),
        ("POST", "/v1/models/lr:predict", b'{"instances": [[0.0]]}'),
        ("GET", "/v2/models/lr", b""),
        ("GET", "/api/models", b""),
        ("GET", "/docs", b""),
    ]
    for method, path, content in requests:
        for host in (
            f"{EVIL_HOST}:{port}",
            EVIL_HOST,
            f"127.0.0.1.{EVIL_HOST}",
            "dockyard.internal.evil",
        ):
            refused = httpx.request(
                method, f"{server.url}{path}", content=content, headers={"Host": host}
            )
            assert refused.status_code == 403, (method, path, host, refused.text)
            assert "Host" in refused.json()["error"]
    for host in (
        f"localhost:{port}",
        "127.0.0.1",
        f"[::1]:{port}",
        f"dockyard.internal:{port}",
        "a.models.example",
    ):
        answer = httpx.post(f"{server.url}{INFER}", content=body, headers={"Host": host})
        assert answer.status_code == 200, (host, answer.text)
        assert httpx.get(f"{server.url}/api/models", headers={"Host": host}).status_code == 200


# Item 5: uploads


@pytest.fixture
def small_uploads(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("DOCKYARD_MAX_UPLOAD_BYTES", str(MIB))
    return MIB


def _upload_head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length else "Transfer-Encoding: chunked"
    return (
        "POST /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary=xyz\r\n{framing}\r\n\r\n"
    ).encode()


def test_an_upload_declared_over_the_limit_is_refused_before_its_body(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    small_uploads: int,
) -> None:
    server = start_server(served, "--workers", "1")
    raw = connect(server)
    raw.send(_upload_head(256 * MIB))
    status, headers, body = raw.response()
    assert status == 413
    assert "max_upload_bytes" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert raw.is_closed(within=5)


def test_a_streamed_upload_is_cut_off_at_the_limit(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    small_uploads: int,
) -> None:
    server = start_server(served, "--workers", "1")
    raw = connect(server)
    raw.send(_upload_head(None))
    preamble = b'--xyz\r\nContent-Disposition: form-data; name="model"; filename="m.skops"\r\n\r\n'
    raw.send(b"%x\r\n%s\r\n" % (len(preamble), preamble))
    piece = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    total = 64 * MIB

    sent = raw.send_until_answered(piece for _ in range(total // (64 * 1024)))

    # Loopback socket buffers hold a few MB; the server stopped reading at the 1 MB limit.
    assert sent < small_uploads + 12 * MIB, f"sent {sent / MIB:.0f} MB before an answer"
    status, _, body = raw.response()
    assert status == 413
    assert "max_upload_bytes" in json.loads(body)["error"]


def test_a_failed_registration_leaves_no_blob_but_keeps_a_shared_one(
    served: Path,
    tmp_path: Path,
    start_server: Callable[..., Server],
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    x = tabular_data[0]
    blobs = _blobs(served)
    model = tmp_path / "model.skops"
    skops.io.dump(logistic, model)
    wrong_width = _csv(x[:20, :7])

    failed = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr"},
        files={"model": ("model.skops", model.read_bytes()), "reference": ("r.csv", wrong_width)},
        timeout=60,
    )
    assert failed.status_code in (400, 500), failed.text
    assert _blobs(served) == blobs
    assert _leftovers(served) == []

    kept = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr"},
        files={"model": ("model.skops", model.read_bytes()), "reference": ("r.csv", _csv(x[:20]))},
        timeout=60,
    )
    assert kept.status_code == 201, kept.text
    shared = kept.json()["artifact"]["sha256"]
    again = httpx.post(
        f"{server.url}/api/models",
        data={"name": "lr"},
        files={"model": ("model.skops", model.read_bytes()), "reference": ("r.csv", wrong_width)},
        timeout=60,
    )
    assert again.status_code in (400, 500), again.text
    assert shared in _blobs(served)
    assert _blobs(served) == blobs | {shared}


def test_a_killed_registration_leaves_nothing_past_the_next_start(
    served: Path, tmp_path: Path, tabular_data: tuple[np.ndarray, np.ndarray]
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    # Importing the model's module hangs: the registration stays killable after storing the blob.
    (code / "slow.py").write_text(
        "import time\ntime.sleep(600)\n\ndef score(x):\n    return x[:, 0]\n"
    )
    (code / "weights.bin").write_bytes(os.urandom(48 * MIB))
    reference = tmp_path / "reference.csv"
    reference.write_bytes(_csv(tabular_data[0][:20]))
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    env = {**os.environ, "DOCKYARD_HOME": str(served), "TMPDIR": str(system_tmp)}
    blobs = _blobs(served)

    for wait_for_blob in (False, True):
        registering = subprocess.Popen(
            [*dockyard_command(), "models", "register", str(code), "--name", "slow"]
            + ["--entrypoint", "slow:score", "--reference", str(reference)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and registering.poll() is None:
            writing = list((served / "artifacts").glob("??/.tmp*"))
            stored = _blobs(served) - blobs
            if (writing and not wait_for_blob) or stored:
                break
            time.sleep(0.002)
        registering.send_signal(signal.SIGKILL)
        registering.wait()
        assert registering.returncode == -signal.SIGKILL

        subprocess.run(
            [*dockyard_command(), "models", "list"], env=env, check=True, capture_output=True
        )

        assert _leftovers(served) == []
        assert list(system_tmp.iterdir()) == []
        assert _blobs(served) == blobs


# Item 7: request heads


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setenv("DOCKYARD_HEADER_TIMEOUT_S", "2")
    monkeypatch.setenv("DOCKYARD_BODY_TIMEOUT_S", "2")
    return 2.0


def test_an_oversized_head_is_refused_with_431_and_closed(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
) -> None:
    server = start_server(served, "--workers", "2")

    huge = connect(server)
    huge.send(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
    sent = huge.send_until_answered(b"a" * 16 * 1024 for _ in range(96 * 64))
    assert sent < 4 * MIB, f"sent {sent / MIB:.0f} MB of one header before an answer"
    status, headers, body = huge.response()
    assert status == 431
    assert "max_header_bytes" in json.loads(body)["error"]
    assert headers["connection"] == "close"
    assert huge.is_closed(within=5)

    many = connect(server)
    fields = "".join(f"X-Field-{i}: {i}\r\n" for i in range(150))
    many.send(f"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n{fields}\r\n".encode())
    status, _, body = many.response()
    assert status == 431
    assert "max_headers" in json.loads(body)["error"]
    assert many.is_closed(within=5)

    long_url = connect(server)
    long_url.send(b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert long_url.response()[0] == 431

    fine = connect(server)
    fine.send(_request("GET", "/v2/health/live", {"X-Pad": "a" * 30_000}))
    assert fine.response()[0] == 200


def test_slow_heads_and_bodies_are_timed_out(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    short_deadlines: float,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    started = time.monotonic()
    trickled = connect(server)
    answer = b""
    for byte in b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n":
        try:
            trickled.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        if select.select([trickled.sock], [], [], 0.5)[0]:
            answer = trickled.sock.recv(65536)
            break
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < short_deadlines + 3
    assert trickled.is_closed(within=2)

    body = _infer_body(tabular_data[0][:2])
    stalled = connect(server)
    stalled.send(_request("POST", INFER, {"Content-Type": "application/json"}, body)[:-10])
    started = time.monotonic()
    status, _, _ = stalled.response()
    assert status == 408
    assert time.monotonic() - started < short_deadlines + 3
    assert stalled.is_closed(within=2)

    silent = connect(server)
    assert silent.is_closed(within=short_deadlines + 3)

    steady = connect(server)
    request = _request("POST", INFER, {"Content-Type": "application/json"}, body)
    head, _, rest = request.partition(b"\r\n\r\n")
    steady.send(head + b"\r\n\r\n")
    for start in range(0, len(rest), len(rest) // 4 + 1):
        time.sleep(short_deadlines * 0.6)
        steady.send(rest[start : start + len(rest) // 4 + 1])
    assert steady.response()[0] == 200


def test_keep_alive_and_pipelining_still_work(
    served: Path,
    start_server: Callable[..., Server],
    connect: Callable[[Server], Raw],
    short_deadlines: float,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> None:
    server = start_server(served, "--workers", "1")
    body = _infer_body(tabular_data[0][:2])
    raw = connect(server)
    pipelined = (
        _request("GET", "/v2/health/live", {})
        + _request("POST", INFER, {"Content-Type": "application/json"}, body)
        + _request("GET", "/v2/health/ready", {})
    )
    raw.send(pipelined)
    assert [raw.response()[0] for _ in range(3)] == [200, 200, 200]
    time.sleep(short_deadlines + 1.5)
    raw.send(_request("POST", INFER, {"Content-Type": "application/json"}, body))
    assert raw.response()[0] == 200
    with httpx.Client(base_url=server.url) as client:
        for _ in range(20):
            assert client.post(INFER, content=body).status_code == 200
