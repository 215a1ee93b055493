"""The load test's chart: latency percentiles against achieved throughput, one point per stage,
as a PNG. matplotlib (the ``loadtest`` extra) is imported inside ``draw`` only, on the Agg
backend (no display needed), so the command starts without it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dockyard.errors import MissingExtra
from dockyard.loadtest.stats import StageResult

SERIES = (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))


def draw(stages: Sequence[StageResult], path: Path, title: str) -> Path:
    """Write the chart of ``stages`` to ``path`` (PNG); a stage past saturation is marked."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtra("matplotlib", "loadtest") from exc
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.add_subplot()
    measured = [stage for stage in stages if stage.p50_ms is not None]
    throughput = [stage.achieved_rps for stage in measured]
    for field, name in SERIES:
        axes.plot(throughput, [getattr(s, field) for s in measured], marker="o", label=name)
    for stage in measured:
        axes.annotate(
            stage.label,
            (stage.achieved_rps, stage.p99_ms or 0.0),
            textcoords="offset points",
            xytext=(4, 6),
            fontsize=7,
            color="red" if stage.saturated else "dimgray",
        )
    axes.set_xlabel("achieved throughput (successful req/s)")
    axes.set_ylabel("latency (ms, log scale)")
    axes.set_yscale("log")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
