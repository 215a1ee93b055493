"""``dockyard serve --log-format json --access-log``: every line the server writes is JSON, and
the access records carry the request id the response gave."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import Server

pytestmark = pytest.mark.e2e
BODY = {"inputs": [{"name": "input-0", "shape": [1, 30], "datatype": "FP64", "data": [0.1] * 30}]}


def _json_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.output().splitlines() if line.strip()]


def test_json_logs_with_access_records(served: Path, start_server: Callable[..., Server]) -> None:
    server = start_server(served, "--log-format", "json", "--access-log", auth=True)
    key = {"X-API-Key": server.admin_key}
    infer = httpx.post(f"{server.url}/v2/models/lr/infer", json=BODY, headers=key)
    assert infer.status_code == 200
    listing = httpx.get(f"{server.url}/api/models", headers=key)
    assert listing.status_code == 200
    infer_id, listing_id = infer.headers["x-request-id"], listing.headers["x-request-id"]
    assert infer_id in server.output_with(infer_id, timeout_s=15.0)
    assert listing_id in server.output_with(listing_id, timeout_s=15.0)
    server.stop()
    records = _json_lines(server)  # raises on any line that is not JSON
    assert all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    access = {r["request_id"]: r for r in records if r["logger"] == "dockyard.access"}
    assert access[infer_id]["path"] == "/v2/models/lr/infer"
    assert access[infer_id]["method"] == "POST"
    assert access[infer_id]["status"] == 200
    assert access[infer_id]["principal"] == "key:admin"
    assert access[infer_id]["client"].startswith("127.0.0.1:")
    assert access[infer_id]["duration_ms"] >= 0
    assert access[listing_id]["path"] == "/api/models"
    assert access[listing_id]["status"] == 200
    assert access[listing_id]["principal"] == "key:admin"
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's, same format


def test_text_logs_carry_the_request_id(served: Path, start_server: Callable[..., Server]) -> None:
    server = start_server(served, "--workers", "1", "--access-log")
    answer = httpx.post(
        f"{server.url}/v2/models/lr/infer", json=BODY, headers={"X-Request-ID": "my-request-1"}
    )
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "my-request-1"
    server.stop()
    output = server.output()
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [A-Z]+ \S+ \[(\S+)\] (.*)$")
    logged = [match for text in output.splitlines() if (match := line.match(text))]
    assert any(" uvicorn.error " in match.group(0) for match in logged), output
    access = [m for m in logged if " dockyard.access " in m.group(0)]
    assert [m.group(1) for m in access] == ["my-request-1"], output
    assert access[0].group(2).startswith("POST /v2/models/lr/infer 200 ")


def test_no_access_records_without_the_flag(
    served: Path, start_server: Callable[..., Server]
) -> None:
    server = start_server(served, "--log-format", "json")
    assert httpx.post(f"{server.url}/v2/models/lr/infer", json=BODY).status_code == 200
    assert httpx.get(f"{server.url}/api/models").status_code == 200
    server.stop()
    records = _json_lines(server)
    assert records
    assert not [r for r in records if r["logger"] == "dockyard.access"]
