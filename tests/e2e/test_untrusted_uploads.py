"""Registration over HTTP never runs code, never fills the disk and leaves nothing behind when it
fails or is killed: real server, real files, real SIGKILL (issue 8, items 1 and 5)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression

from rawhttp import Raw
from servers import Server, dockyard_command
from tables import csv_bytes as _csv

MIB = 1024 * 1024


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


def _blobs(home: Path) -> set[str]:
    return {path.name for path in (home / "artifacts").glob("??/*")}


def _leftovers(home: Path) -> list[Path]:
    """Staging folders and unfinished blob writes (anything but the staging lock and the running
    server's metrics folder, which lives there until the server is gone)."""
    staging = [
        p for p in (home / "tmp").glob("*") if p.name != ".lock" and not p.name.endswith("-metrics")
    ]
    return [*staging, *(home / "artifacts").glob("??/.tmp*")]


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
