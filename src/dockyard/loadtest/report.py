"""A load test's report: what was measured against what (target, inputs, settings), each stage's
numbers, where and why it stopped; as JSON for machines and a table for people."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dockyard.loadtest.runner import OPEN, Load
from dockyard.loadtest.stats import StageResult
from dockyard.loadtest.target import Target

GENERATOR = "asyncio (uvloop) protocols, HTTP/1.1 keep-alive, httptools parser"
REPORT_FORMAT = 1


@dataclass(frozen=True)
class LoadReport:
    """Everything one ``dockyard loadtest`` measured."""

    target: Target
    inputs: str
    """Where the request bodies came from: ``file``, ``profile`` or ``metadata``."""
    rows: int
    load: Load
    stages: Sequence[StageResult]

    @property
    def stopped(self) -> str:
        """Why the run ended before its last stage (a stage past saturation), else ""."""
        last = self.stages[-1] if self.stages else None
        return f"{last.label}: {last.reason}" if last is not None and last.saturated else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "target": {
                "url": self.target.url,
                "model": self.target.model,
                "version": self.target.version,
            },
            "inputs": self.inputs,
            "rows_per_request": self.rows,
            "mode": self.load.mode,
            "duration_s": self.load.duration_s,
            "timeout_s": self.load.timeout_s,
            "max_in_flight": self.load.max_in_flight,
            "generator": {"client": GENERATOR, "cpu_count": os.cpu_count()},
            "stages": [stage.to_dict() for stage in self.stages],
            "stopped": self.stopped,
        }

    def write_json(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def print_table(self, console: Console) -> None:
        console.print(
            f"{self.target.describe()}: {self.load.mode} loop, {self.load.duration_s:g} s a "
            f"stage, inputs from {self.inputs}; latencies in ms from the scheduled send time"
        )
        table = Table()
        first = "rate" if self.load.mode == OPEN else "clients"
        for column in (first, "sent", "ok", "errors", "ok/s", "p50", "p95", "p99", "max"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        for stage in self.stages:
            level = (
                f"{stage.offered_rps:g}/s"
                if stage.offered_rps is not None
                else str(stage.connections)
            )
            table.add_row(
                level,
                str(stage.sent),
                str(stage.completed),
                str(stage.errors),
                f"{stage.achieved_rps:.0f}",
                *(_ms(getattr(stage, f)) for f in ("p50_ms", "p95_ms", "p99_ms", "max_ms")),
                "*" if stage.saturated else "",
            )
        console.print(table)
        for stage in self.stages:
            if stage.error_kinds:
                kinds = ", ".join(f"{kind}: {count}" for kind, count in stage.error_kinds.items())
                console.print(f"errors at {stage.label}: {kinds}")
        if self.stopped:
            console.print(f"* past saturation, the run stopped: {self.stopped}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
