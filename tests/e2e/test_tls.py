"""HTTPS and mutual TLS against real servers, one worker and two: httpx and tritonclient infer over
TLS, plain HTTP and untrusted clients are refused in the handshake, and a bad certificate file
stops ``dockyard serve`` with one error line."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from http.client import HTTPException
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression

from certs import Pair, Pki, make_pki
from servers import Server, dockyard_command, free_port

pytestmark = pytest.mark.e2e
INFER = "/v2/models/lr/infer"
WORKERS = pytest.mark.parametrize("workers", ["1", "2"], ids=["one-worker", "two-workers"])

StartTls = Callable[..., Server]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def start_tls(tmp_path: Path, pki: Pki) -> Iterator[StartTls]:
    """Factory: ``dockyard serve --tls-cert … ARGS`` (no auth) probed through ``tls``."""
    servers: list[Server] = []

    def start(home: Path, *args: str, tls: ssl.SSLContext, mutual: bool = False) -> Server:
        flags = ["--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key)]
        if mutual:
            flags += ["--tls-client-ca", str(pki.ca)]
        log = tmp_path / f"server-{len(servers)}.log"
        server = Server(home, [*flags, *args], log, tls=tls)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def infer_body(rows: np.ndarray) -> dict[str, object]:
    tensor = {"name": "input-0", "shape": list(rows.shape), "datatype": "FP64"}
    return {"inputs": [{**tensor, "data": rows.ravel().tolist()}]}


def assert_infers(
    server: Server, tls: ssl.SSLContext, logistic: LogisticRegression, rows: np.ndarray
) -> None:
    """Infer on a few fresh connections, so that with many workers more than one answers."""
    for row in rows:
        one = row[np.newaxis, :]
        with httpx.Client(verify=tls, timeout=10) as client:
            answer = client.post(f"{server.url}{INFER}", json=infer_body(one))
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == logistic.predict(one).tolist()


def triton_client(server: Server, pki: Pki, pair: Pair | None) -> triton.InferenceServerClient:
    options = {"ca_certs": str(pki.ca)}
    if pair is not None:
        options |= {"certfile": str(pair.cert), "keyfile": str(pair.key)}
    return triton.InferenceServerClient(
        url=f"127.0.0.1:{server.port}", ssl=True, ssl_options=options, network_timeout=10
    )


def assert_triton_infers(
    server: Server, pki: Pki, pair: Pair | None, logistic: LogisticRegression, rows: np.ndarray
) -> None:
    client = triton_client(server, pki, pair)
    try:
        assert client.is_server_live()
        assert client.is_model_ready("lr")
        tensor = triton.InferInput("input-0", list(rows.shape), "FP64")
        tensor.set_data_from_numpy(rows, binary_data=True)
        result = client.infer("lr", [tensor])
        np.testing.assert_array_equal(result.as_numpy("predict"), logistic.predict(rows))
    finally:
        client.close()


def tls_exchange(server: Server, context: ssl.SSLContext) -> bytes:
    """A handshake and one request on a raw TLS socket; what came back (b"": closed)."""
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return tls.recv(65536)


def assert_refused(server: Server, pki: Pki, pair: Pair | None) -> None:
    """The server closes a connection whose client it does not trust before any HTTP.

    In TLS 1.2 the handshake itself fails. In TLS 1.3 the client's side of the handshake is done
    before the server checks its certificate, so the client sees the close on its first read.
    The event loop's TLS closes without sending the alert (python/cpython#98078; uvloop alike),
    so the client sees an EOF, not "certificate required".
    """
    tls12 = pki.client_context(pair)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        tls12.wrap_socket(raw, server_hostname="127.0.0.1")
    try:
        answer = tls_exchange(server, pki.client_context(pair))
    except (ssl.SSLError, ConnectionError):
        return
    assert answer == b"", answer


@WORKERS
def test_https_serves_httpx_and_tritonclient(
    served: Path,
    start_tls: StartTls,
    pki: Pki,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    workers: str,
) -> None:
    trusting = pki.client_context()
    server = start_tls(served, "--workers", workers, tls=trusting)
    rows = tabular_data[0][:6]
    assert f"on https://127.0.0.1:{server.port}" in server.output()

    assert_infers(server, trusting, logistic, rows)
    assert_triton_infers(server, pki, None, logistic, rows[:3])
    assert tls_exchange(server, trusting).startswith(b"HTTP/1.1 200 OK")
    assert tls_exchange(server, pki.client_context(pki.client)).startswith(b"HTTP/1.1 200 OK")

    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.url}/v2/health/live", verify=ssl.create_default_context())
    plain = f"http://127.0.0.1:{server.port}/v2/health/live"
    with pytest.raises(httpx.TransportError):
        httpx.get(plain, timeout=10)

    assert_infers(server, trusting, logistic, rows[:2])
    assert server.process.poll() is None
    assert "Traceback" not in server.output()


@WORKERS
def test_mutual_tls_takes_only_clients_its_ca_signed(
    served: Path,
    start_tls: StartTls,
    pki: Pki,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
    workers: str,
) -> None:
    client = pki.client_context(pki.client)
    server = start_tls(served, "--workers", workers, tls=client, mutual=True)
    rows = tabular_data[0][:6]

    assert_infers(server, client, logistic, rows)
    assert_triton_infers(server, pki, pki.client, logistic, rows[:3])

    for refused in (None, pki.stranger):
        assert_refused(server, pki, refused)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/v2/health/live", verify=pki.client_context(refused))
        untrusted = triton_client(server, pki, refused)
        try:
            with pytest.raises(HTTPException, match="connection closed"):
                untrusted.is_server_live()
        finally:
            untrusted.close()

    assert_infers(server, client, logistic, rows[:2])
    assert server.process.poll() is None
    assert "Traceback" not in server.output()


def test_a_bad_tls_file_stops_serve_with_one_error_line(
    served: Path, pki: Pki, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    flags = ["--tls-cert", str(garbage), "--tls-key", str(pki.server.key)]
    finished = subprocess.run(
        [*dockyard_command(), "serve", "--no-auth", *flags, "--port", str(free_port())],
        env={**os.environ, "DOCKYARD_HOME": str(served)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2, finished.stderr
    errors = [line for line in finished.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: tls_cert {garbage}: no PEM certificate in it"], finished.stderr
    assert "Traceback" not in finished.stderr
    assert "serving" not in finished.stdout
