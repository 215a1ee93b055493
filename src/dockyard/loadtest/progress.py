"""The live display of a load test (Rich, on stderr): one line per stage with its elapsed time,
requests sent, answered and failed, and once it ends its throughput and p99."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from dockyard.loadtest.connections import Tally
from dockyard.loadtest.stats import StageResult


class LiveDisplay:
    """A ``runner.Display`` drawing Rich progress bars; use it as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("{task.description:>15}"),
            BarColumn(bar_width=16),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=console or Console(stderr=True),
        )
        self.task: TaskID | None = None

    def __enter__(self) -> LiveDisplay:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def stage_started(self, label: str, duration_s: float) -> None:
        self.task = self.progress.add_task(label, total=duration_s, status="starting")

    def stage_progress(self, tally: Tally, elapsed_s: float) -> None:
        if self.task is None:
            return
        status = f"sent {tally.sent}  ok {tally.ok}  errors {tally.error_count}"
        self.progress.update(self.task, completed=elapsed_s, status=status)

    def stage_ended(self, stage: StageResult) -> None:
        if self.task is None:
            return
        p99 = f"{stage.p99_ms:.1f} ms" if stage.p99_ms is not None else "-"
        status = (
            f"{stage.achieved_rps:.0f} req/s  p99 {p99}  errors {stage.errors}"
            f"{'  SATURATED' if stage.saturated else ''}"
        )
        total = self.progress.tasks[-1].total or stage.duration_s
        self.progress.update(self.task, completed=total, status=status)
        self.task = None
