"""``dockyard loadtest`` against a real ``dockyard serve`` with API keys: the JSON report's numbers
add up, its percentiles are ordered, the chart is a PNG; bad command lines and servers are one
line and an exit code."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import dockyard
from clirun import run_cli
from servers import Server, dockyard_command

pytestmark = pytest.mark.e2e

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
    logistic: LogisticRegression,
    tabular_data: tuple[np.ndarray, np.ndarray],
) -> Iterator[Server]:
    """One secured server for the module, serving ``fraud`` (30 features ``x0``..``x29``)."""
    folder = tmp_path_factory.mktemp("loadtest")
    home = folder / "home"
    dockyard.register_model(logistic, "fraud", reference_data=tabular_data[0][:100], home=home)
    started = Server(home, ["fraud", "--workers", "1"], folder / "server.log", auth=True)
    yield started
    started.stop()


def _check_report(report: dict[str, Any]) -> None:
    assert report["stages"]
    for stage in report["stages"]:
        assert stage["completed"] + stage["errors"] == stage["sent"], stage
        assert sum(stage["error_kinds"].values()) == stage["errors"], stage
        assert stage["completed"] > 0, stage
        assert stage["p50_ms"] <= stage["p95_ms"] <= stage["p99_ms"] <= stage["max_ms"], stage


def _check_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = matplotlib.image.imread(path).shape
    assert width >= 400
    assert height >= 300


def test_open_loop_writes_a_report_and_a_chart(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [*dockyard_command(), "loadtest", server.url, "--model", "fraud", "--rates", "100,200",
         "--duration", "0.4s", "--out", str(out)],
        env={**os.environ, "DOCKYARD_API_KEY": server.admin_key},
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert f"wrote {out / 'loadtest.json'} and {out / 'loadtest.png'}" in result.stdout
    report = json.loads((out / "loadtest.json").read_text())
    _check_report(report)
    assert report["mode"] == "open"
    assert report["inputs"] == "profile"  # the key may read the version: its reference profile
    offered = [stage["offered_rps"] for stage in report["stages"]]
    assert offered in ([100.0], [100.0, 200.0])  # a busy machine may saturate at the second
    assert [stage["sent"] for stage in report["stages"]] == [40, 80][: len(offered)]
    _check_png(out / "loadtest.png")


def test_closed_loop_with_rows_from_a_file(
    server: Server,
    tmp_path: Path,
    tabular_data: tuple[np.ndarray, np.ndarray],
    capsys: pytest.CaptureFixture[str],
) -> None:
    rows = tmp_path / "rows.csv"
    header = ",".join(f"x{i}" for i in range(30))
    np.savetxt(rows, tabular_data[0][:20], delimiter=",", header=header, comments="")
    out = tmp_path / "out"

    code, stdout, stderr = run_cli(
        capsys, "loadtest", server.url, "--model", "fraud", "--key", server.admin_key,
        "--connections", "1,4", "--duration", "0.4s", "--input", str(rows), "--rows", "2",
        "--version", "1", "--out", str(out), "--json",
    )  # fmt: skip

    assert code == 0, stderr
    report = json.loads(stdout)
    assert report == json.loads((out / "loadtest.json").read_text())
    _check_report(report)
    assert report["mode"] == "closed"
    assert report["inputs"] == "file"
    assert [stage["connections"] for stage in report["stages"]][0] == 1
    _check_png(out / "loadtest.png")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--rates", "100,fast"], 2, "--rates 'fast' is not a quantity"),
        (["--duration", "soon"], 2, "--duration 'soon' is not a quantity"),
        (["--key", "dy_wrong"], 3, "answered 401"),
        (["--model", "unknown"], 4, "answered 404"),
        (["--url-of-nothing"], 7, "cannot reach http://127.0.0.1:9"),
    ],
    ids=["rates", "duration", "key", "model", "unreachable"],
)
def test_bad_input_is_one_line_and_its_exit_code(
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    url = server.url
    if args == ["--url-of-nothing"]:
        url, args = "http://127.0.0.1:9", []
    argv = ["loadtest", url, "--model", "fraud", "--duration", "0.2s", "--out", str(tmp_path)]
    if "--key" not in args:
        argv += ["--key", server.admin_key]

    exit_code, _, stderr = run_cli(capsys, *argv, *args)

    assert exit_code == code, stderr
    assert message in stderr
    assert stderr.count("\n") == 1
    assert stderr.startswith("error: ")
    assert not (tmp_path / "loadtest.json").exists()
