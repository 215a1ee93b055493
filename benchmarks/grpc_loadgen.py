"""A closed-loop gRPC load generator (ghz is not installed here): N concurrent ``ModelInfer`` calls
on grpcio's asyncio client (uvloop), each stream sending its next call when its answer is in.

Run as its own process (``measure``), like ``loadgen.py``, so it has an interpreter and a core of
its own. The request is a serialized ``ModelInferRequest`` read from a file, sent as is: the
client builds no message per call, as a production client sending the same tensor would not.
The streams are spread over ``--channels`` HTTP/2 connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SERVICE_METHOD = "/inference.GRPCInferenceService/ModelInfer"
MESSAGE_LIMIT = 64 * 1024 * 1024


async def _run(
    address: str,
    request: bytes,
    duration: float,
    streams: int,
    channels: int,
    authorization: str | None,
) -> dict[str, Any]:
    import grpc

    metadata = (("authorization", authorization),) if authorization else None
    options = [
        ("grpc.max_receive_message_length", MESSAGE_LIMIT),
        ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ]
    opened = [grpc.aio.insecure_channel(address, options=options) for _ in range(channels)]
    # Bytes in, bytes out: the generator measures the server, not protobuf in this process.
    calls = [
        channel.unary_unary(SERVICE_METHOD, request_serializer=None, response_deserializer=None)
        for channel in opened
    ]
    for call in calls:
        await call(request, metadata=metadata, timeout=30)  # connected and warm
    latencies: list[float] = []
    errors: dict[str, int] = {}
    stop = time.perf_counter() + duration

    async def stream(index: int) -> None:
        call = calls[index % channels]
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                await call(request, metadata=metadata, timeout=30)
            except grpc.aio.AioRpcError as exc:
                name = exc.code().name
                errors[name] = errors.get(name, 0) + 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(stream(index) for index in range(streams)))
    elapsed = time.perf_counter() - began
    for channel in opened:
        await channel.close()
    measured = np.asarray(latencies) * 1000
    p50, p90, p99 = np.percentile(measured, [50, 90, 99]) if measured.size else (np.nan,) * 3
    return {
        "connections": streams,
        "channels": channels,
        "requests": len(latencies) + sum(errors.values()),
        "ok": len(latencies),
        "errors": sum(errors.values()),
        "error_codes": errors,
        "rps": len(latencies) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "max_ms": float(measured.max()) if measured.size else float("nan"),
    }


def measure(
    address: str,
    request_file: Path,
    *,
    duration: float,
    streams: int,
    channels: int = 1,
    authorization: str | None = None,
) -> dict[str, Any]:
    """Run this module as a separate process and return its JSON; ``authorization`` (the
    ``authorization`` metadata's value) reaches it in ``BENCH_AUTH``."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--address",
        address,
        "--request",
        str(request_file),
        "--duration",
        str(duration),
        "--streams",
        str(streams),
        "--channels",
        str(channels),
    ]
    env = {**os.environ, "BENCH_AUTH": authorization or ""}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration + 60, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpc_loadgen failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--request", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    import uvloop

    result = uvloop.run(
        _run(
            args.address,
            args.request.read_bytes(),
            args.duration,
            args.streams,
            args.channels,
            os.environ.get("BENCH_AUTH") or None,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
