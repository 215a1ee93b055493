"""REST and gRPC side by side (issue 16): one Dockyard server answering both, one worker, auth on.

Throughput: the small model, one row a request, 64 connections (REST) against 64 concurrent
streams on one HTTP/2 connection (gRPC), interleaved repeats, the median of each. Both sides are
driven by a C client where one is installed (wrk for REST, h2load for gRPC: the gRPC frame of a
serialized ``ModelInferRequest`` posted with ``content-type: application/grpc``), and by a Python
asyncio client too (``loadgen.py``, ``grpc_loadgen.py``), which shares the machine's two cores
with the server and so reads lower. h2load takes the bench key's ``authorization`` on its command
line (it reads headers from nowhere else): a predictor key of the throwaway bench home. h2load
also loads ``bare_grpc.py``, grpcio's asyncio server answering a constant with no model and no
checks: the ceiling of any service on that server, Dockyard's included.

Large request: ``small-onnx`` with 1,000 x 30 FP32 rows, one connection, one request at a time,
every output asked for: REST with JSON ``data`` against gRPC with ``raw_input_contents`` (and raw
outputs back). Latency is the median round trip of pre-encoded requests (both Python clients,
neither decoding the answer).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc_loadgen
import launch
import loadgen
import models
import numpy as np
import orjson
import scenarios
import wrk

CONNECTIONS = 64
BIG_ROWS = 1000
SERVICE_PATH = "/inference.GRPCInferenceService/ModelInfer"
H2LOAD_RPS = re.compile(r"finished in [\d.]+s, ([\d.]+) req/s")
H2LOAD_DONE = re.compile(
    r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed"
)
REST_C, GRPC_C = "REST (wrk)", "gRPC (h2load)"
GRPC_FLOOR = "gRPC (h2load), bare grpcio server, no model"
FLOOR_READY_S = 30.0
REST_PY, GRPC_PY = "REST (loadgen.py)", "gRPC (grpc_loadgen.py)"
REST_JSON, GRPC_RAW = "REST JSON", "gRPC raw"


def ensure_h2load() -> str | None:
    """The path to h2load, installing the Debian package (nghttp2-client) if it is missing, as
    ``wrk.ensure_wrk`` does; None if that fails (the Python clients' rows are then the judged
    ones)."""
    found = shutil.which("h2load")
    if found:
        return found
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "nghttp2-client"],
    ):
        try:
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                timeout=wrk.INSTALL_TIMEOUT_S,
                env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except (OSError, subprocess.SubprocessError):
            return None
    return shutil.which("h2load")


def _infer_request(
    model: str, name: str, rows: np.ndarray, *, raw: bool, outputs: list[str]
) -> bytes:
    from dockyard.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    datatype = "FP32" if rows.dtype == np.float32 else "FP64"
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=rows.shape)
    if raw:
        request.raw_input_contents.append(rows.astype(rows.dtype.newbyteorder("<")).tobytes())
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    else:
        tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    for output in outputs:
        request.outputs.add(name=output)
    return request.SerializeToString()


def _check_grpc(address: str, request: bytes, authorization: str | None) -> None:
    """One call through grpcio: h2load counts HTTP statuses, and a gRPC error is a 200 too."""
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(SERVICE_PATH)
        metadata = (("authorization", authorization),) if authorization else None
        call(request, metadata=metadata, timeout=30)


@contextlib.contextmanager
def _bare_grpc(logs: Path, request: bytes) -> Iterator[str]:
    """``bare_grpc.py`` (grpcio's asyncio server answering a constant) running; its address."""
    spec = launch.ServerSpec(
        label="bare-grpc",
        command=[sys.executable, str(launch.BENCH_DIR / "bare_grpc.py"), "--port", "{port}"],
        infer_path=SERVICE_PATH,
    )
    server = launch.start(spec, logs)
    address = f"{launch.HOST}:{server.port}"
    try:
        deadline = time.monotonic() + FLOOR_READY_S
        while True:
            try:
                _check_grpc(address, request, None)
                break
            except Exception:
                if time.monotonic() > deadline or server.process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield address
    finally:
        launch.stop(server)


def _h2load(
    h2load: str, address: str, frame: Path, seconds: float, authorization: str | None
) -> dict[str, Any]:
    command = [
        h2load,
        "-c1",
        f"-m{CONNECTIONS}",
        f"-D{max(1, round(seconds))}",
        "-d",
        str(frame),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        *(("-H", f"authorization: {authorization}") if authorization else ()),
        f"http://{address}{SERVICE_PATH}",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    rate = H2LOAD_RPS.search(done.stdout)
    counts = H2LOAD_DONE.search(done.stdout)
    if done.returncode != 0 or rate is None or counts is None:
        raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return {
        "tool": "h2load",
        "rps": float(rate.group(1)),
        "ok": int(counts.group(1)),
        "errors": int(counts.group(2)),
    }


def _row(label: str, runs: list[dict[str, Any]], connections: int) -> dict[str, Any]:
    def median(key: str) -> float:
        values = [run[key] for run in runs if key in run]
        return float(statistics.median(values)) if values else float("nan")

    return {
        "client": label,
        "connections": connections,
        "rps": median("rps"),
        "p50_ms": median("p50_ms"),
        "p99_ms": median("p99_ms"),
        "errors": sum(int(run.get("errors", 0)) for run in runs),
        "repeats": len(runs),
    }


def measure(
    built: models.ModelSet,
    logs: Path,
    plan: scenarios.Plan,
    closed: scenarios.ClosedLoop,
    work: Path,
) -> dict[str, Any]:
    """The throughput rows and the large-request rows, with what was measured and how."""
    grpc_port = launch.free_port()
    address = f"{launch.HOST}:{grpc_port}"
    spec = launch.dockyard_spec(
        built.home,
        "small:1",
        beside=("small-onnx:1", "--grpc-port", str(grpc_port)),
        api_key=built.api_key,
        label="dockyard-rest-grpc",
    )
    authorization = spec.authorization
    x = models.training_data()[0]
    row = x[-1:]
    small_request = _infer_request("small", "input-0", row, raw=False, outputs=["predict_proba"])
    small_body = work / "grpc-small.json"
    small_body.write_bytes(models.v2_body("input-0", "FP64", row[0].tolist(), ["predict_proba"]))
    small_file = work / "grpc-small.bin"
    small_file.write_bytes(small_request)
    frame = work / "grpc-small.frame"
    frame.write_bytes(b"\0" + struct.pack(">I", len(small_request)) + small_request)
    h2load = ensure_h2load()
    # The floor is loaded by h2load only: without it, no bare server is started.
    bare = _bare_grpc(logs, small_request) if h2load else contextlib.nullcontext("")
    with launch.running(spec, logs) as server, bare as floor:
        status, answer = launch.http_request(
            server.port, "GET", "/v2/models/small-onnx", authorization=authorization
        )
        if status != 200:
            raise RuntimeError(f"small-onnx metadata: {status} {answer[:200]!r}")
        onnx_input = orjson.loads(answer)["inputs"][0]["name"]
        big = x[:BIG_ROWS].astype(np.float32)
        big_body = work / "grpc-big.json"
        big_body.write_bytes(
            orjson.dumps(
                {
                    "inputs": [
                        {
                            "name": onnx_input,
                            "shape": list(big.shape),
                            "datatype": "FP32",
                            "data": big.ravel().tolist(),
                        }
                    ]
                }
            )
        )
        big_file = work / "grpc-big.bin"
        big_file.write_bytes(_infer_request("small-onnx", onnx_input, big, raw=True, outputs=[]))
        for request in (small_request, big_file.read_bytes()):
            _check_grpc(address, request, authorization)
        drivers: dict[str, Callable[[float], dict[str, Any]]] = {
            REST_C: lambda s: closed(
                server.port, spec.infer_path, small_body, CONNECTIONS, s, authorization
            ),
            REST_PY: lambda s: loadgen.measure(
                "closed",
                server.port,
                spec.infer_path,
                small_body,
                duration=s,
                connections=CONNECTIONS,
                authorization=authorization,
            ),
            GRPC_PY: lambda s: grpc_loadgen.measure(
                address, small_file, duration=s, streams=CONNECTIONS, authorization=authorization
            ),
        }
        if h2load is not None:
            drivers[GRPC_C] = lambda s: _h2load(h2load, address, frame, s, authorization)
            drivers[GRPC_FLOOR] = lambda s: _h2load(h2load, floor, frame, s, None)
        large: dict[str, Callable[[float], dict[str, Any]]] = {
            REST_JSON: lambda s: loadgen.measure(
                "closed",
                server.port,
                "/v2/models/small-onnx/infer",
                big_body,
                duration=s,
                connections=1,
                authorization=authorization,
            ),
            GRPC_RAW: lambda s: grpc_loadgen.measure(
                address, big_file, duration=s, streams=1, authorization=authorization
            ),
        }
        for action in (*drivers.values(), *large.values()):
            action(plan.warmup_s)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in (*drivers, *large)}
        for _ in range(plan.repeats):
            for label, action in (*drivers.items(), *large.items()):
                result = action(plan.duration_s)
                runs[label].append(result)
                print(
                    f"  {label:<24} {result['rps']:>8.0f} req/s"
                    + (f"  p50 {result['p50_ms']:.2f} ms" if "p50_ms" in result else ""),
                    flush=True,
                )
    return {
        "throughput": [_row(label, runs[label], CONNECTIONS) for label in drivers],
        "large": [_row(label, runs[label], 1) for label in large],
        "large_request": {
            "rows": BIG_ROWS,
            "features": int(x.shape[1]),
            "datatype": "FP32",
            "json_bytes": big_body.stat().st_size,
            "grpc_bytes": big_file.stat().st_size,
        },
        "h2load": h2load is not None,
    }


def row(results: dict[str, Any], section: str, client: str) -> dict[str, Any] | None:
    """One measured row of the ``grpc`` results, if it was measured."""
    for entry in (results.get("grpc") or {}).get(section, []):
        if entry["client"] == client:
            found: dict[str, Any] = entry
            return found
    return None


def throughput_ratio(results: dict[str, Any]) -> tuple[float, str] | None:
    """gRPC's req/s over REST's at 64 connections/streams, C clients (wrk, h2load) when both ran,
    else the Python clients."""
    for grpc_client, rest_client in ((GRPC_C, REST_C), (GRPC_PY, REST_PY)):
        grpc_row, rest_row = (
            row(results, "throughput", grpc_client),
            row(results, "throughput", rest_client),
        )
        if grpc_row and rest_row and rest_row["rps"]:
            value = grpc_row["rps"] / rest_row["rps"]
            floor = row(results, "throughput", GRPC_FLOOR)
            ceiling = (
                f" (grpcio's own ceiling, its server answering a constant: {floor['rps']:.0f} "
                f"req/s = {floor['rps'] / rest_row['rps']:.2f}x)"
                if floor and grpc_client == GRPC_C
                else ""
            )
            return value, (
                f"{grpc_row['rps']:.0f} ({grpc_client}) vs {rest_row['rps']:.0f} req/s "
                f"({rest_client}): {value:.2f}x{ceiling}"
            )
    return None


def large_request_ratio(results: dict[str, Any]) -> tuple[float, str] | None:
    """REST JSON's p50 over gRPC raw's for the 1,000 x 30 FP32 request."""
    rest_row, grpc_row = row(results, "large", REST_JSON), row(results, "large", GRPC_RAW)
    if not rest_row or not grpc_row or not grpc_row["p50_ms"]:
        return None
    value = rest_row["p50_ms"] / grpc_row["p50_ms"]
    return value, (
        f"p50 {grpc_row['p50_ms']:.2f} ms (gRPC raw) vs {rest_row['p50_ms']:.2f} ms (REST JSON): "
        f"{value:.2f}x faster"
    )


ROW_HEADER = ["measured", "client", "connections", "req/s", "p50 ms", "p99 ms", "errors"]


def rows(results: dict[str, Any]) -> tuple[str, list[list[Any]]] | None:
    """The report's setup line and table, or None when the section did not run."""
    measured = results.get("grpc")
    if not measured:
        return None
    big = measured["large_request"]
    setup = (
        "One server (small and small-onnx, 1 worker, auth on) answering REST and gRPC; "
        f"throughput at {CONNECTIONS} connections (REST) or concurrent streams on one HTTP/2 "
        f"connection (gRPC), one row a request; the large request is {big['rows']} x "
        f"{big['features']} {big['datatype']} to small-onnx, one at a time "
        f"({big['json_bytes']:,} bytes of JSON, {big['grpc_bytes']:,} bytes of protobuf with raw "
        "contents)."
    )
    table = [
        [
            "small model",
            entry["client"],
            entry["connections"],
            entry["rps"],
            entry["p50_ms"],
            entry["p99_ms"],
            entry["errors"],
        ]
        for entry in measured["throughput"]
    ] + [
        [
            "1,000 x 30 FP32",
            entry["client"],
            entry["connections"],
            entry["rps"],
            entry["p50_ms"],
            entry["p99_ms"],
            entry["errors"],
        ]
        for entry in measured["large"]
    ]
    return setup, table
