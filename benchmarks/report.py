"""RESULTS.md from one run's results: method, targets, then a table per scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cli_timings
import grpc_bench
import shedding
import swap
from lineup import (
    AUTH_COST_NOTE,
    MONITORING_COST_NOTE,
    OPTIMIZE_NOTE,
    PRIVACY_COST_NOTE,
    PYTHONS_NOTE,
    RAY_NOTE,
)

SCENARIO_NOTES = {
    "ray": RAY_NOTE,
    "optimize": OPTIMIZE_NOTE,
    "auth-cost": AUTH_COST_NOTE,
    "monitoring-cost": MONITORING_COST_NOTE,
    "privacy-cost": PRIVACY_COST_NOTE,
    "pythons": PYTHONS_NOTE,
}
"""A sentence under a scenario's tables: what differs between its servers."""

ISSUE_FIGURES = (
    ("small", "bare-asgi", 1, 64, "rps", 4000, "bare ASGI, small, 64 conn, 1 worker"),
    ("small", "bare-asgi", 2, 64, "rps", 7200, "bare ASGI, small, 64 conn, 2 workers"),
    ("small", "bare-asgi", 2, 64, "p99_ms", 17, "bare ASGI, small, 64 conn, 2 workers, p99 ms"),
    ("small", "bare-asgi", 1, 1, "p50_ms", 0.33, "bare ASGI, small, 1 conn, p50 ms"),
    ("small", "fastapi", 1, 64, "rps", 3200, "FastAPI endpoint, small, 64 conn"),
    ("small", "mlserver", 1, 64, "rps", 1400, "MLServer, small, 64 conn"),
    ("heavy", "mlserver (adaptive batching)", 1, 64, "rps", 1100, "MLServer, heavy, 64 conn"),
)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows)
    return [*lines, ""]


def _closed_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    scenarios = dict.fromkeys(row["scenario"] for row in results["closed"])
    for scenario in scenarios:
        rows = [row for row in results["closed"] if row["scenario"] == scenario]
        lines.append(f"### Closed loop: {scenario}")
        lines.append("")
        if scenario in SCENARIO_NOTES:
            lines += [SCENARIO_NOTES[scenario], ""]
        lines.extend(
            _table(
                [
                    "server",
                    "workers",
                    "connections",
                    "req/s (median)",
                    "req/s min–max",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                ],
                [
                    [
                        r["server"],
                        r["workers"],
                        r["connections"],
                        r["rps"],
                        f"{r['rps_min']:.0f}–{r['rps_max']:.0f}",
                        r["p50_ms"],
                        r["p99_ms"],
                        r["errors"],
                    ]
                    for r in rows
                ],
            )
        )
    return lines


def _open_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    scenarios = dict.fromkeys(row["scenario"] for row in results["open"])
    for scenario in scenarios:
        rows = [row for row in results["open"] if row["scenario"] == scenario]
        lines.append(f"### Open loop: {scenario}")
        lines.append("")
        lines.extend(
            _table(
                [
                    "server",
                    "workers",
                    "offered req/s",
                    "achieved req/s",
                    "p50 ms",
                    "p99 ms",
                    "errors",
                    "unfinished",
                    "generator lag p99 ms",
                    "saturated",
                ],
                [
                    [
                        r["server"],
                        r["workers"],
                        f"{r['rate']:.0f}",
                        r["rps"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["errors"],
                        r["unfinished"],
                        r.get("lag_p99_ms"),
                        "yes" if r["is_saturated"] else "no",
                    ]
                    for r in rows
                ],
            )
        )
    return lines


def _issue_figures(results: dict[str, Any]) -> list[str]:
    rows = []
    for scenario, server, workers, connections, metric, figure, label in ISSUE_FIGURES:
        row = next(
            (
                r
                for r in results["closed"]
                if (r["scenario"], r["server"], r["workers"], r["connections"])
                == (scenario, server, workers, connections)
            ),
            None,
        )
        rows.append([label, figure, None if row is None else row[metric]])
    reference = {(r["model"], r["batch"]): r for r in results.get("reference", [])}
    heavy = reference.get(("heavy (sklearn)", 64))
    rows.append(
        [
            "heavy model in process, rows/s in batches of 64",
            16000,
            None if heavy is None else heavy["rows_per_s"],
        ]
    )
    return _table(["figure", "issue", "this run"], rows)


def _targets(results: dict[str, Any]) -> list[str]:
    rows = []
    for t in results["targets"]:
        verdict = {True: "pass", False: "**FAIL**", None: "not measured"}[t["passed"]]
        rows.append([t["target"], t["measured"], verdict, t.get("margin", "–")])
    return _table(["target", "measured", "result", "margin"], rows)


def _profiles(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for profile in results.get("profiles", []):
        lines += [f"### {profile['title']} ({profile['samples']} samples)", ""]
        own = dict(profile["self"])
        rows = [
            [f"`{name}`", f"{share:.0%}", f"{own.get(name, 0.0):.0%}"]
            for name, share in profile["inclusive"]
        ]
        lines += _table(["function (hottest on the stack)", "on the stack", "itself"], rows)
        lines += _table(
            ["function (hottest itself)", "itself"],
            [[f"`{name}`", f"{share:.0%}"] for name, share in profile["self"]],
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    machine, settings = results["machine"], results["settings"]
    lines = [
        "# Dockyard benchmarks",
        "",
        f"Generated by `{results['command']}` on {results['date']}"
        f" ({'quick smoke run' if settings['quick'] else 'full run'}, "
        f"{results['elapsed_s'] / 60:.1f} min). Do not edit: rerun `make bench`.",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']:.0f} GB; "
        f"{machine['kernel']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "- Method: " + " ".join(results["method"]),
        "",
        "## Targets",
        "",
        *_targets(results),
        "What limits each figure, the margins, and what was tried: [ANALYSIS.md](ANALYSIS.md)"
        " (written by hand after this run, from the profiles at the end and hand runs).",
        "",
        "## The issue's reference figures on this machine",
        "",
        *_issue_figures(results),
        "## Raw in-process prediction (the physical limit)",
        "",
        *_table(
            ["model", "batch", "rows/s", "ms per call"],
            [
                [r["model"], r["batch"], r["rows_per_s"], r["ms_per_call"]]
                for r in results.get("reference", [])
            ],
        ),
        "## dockyard optimize",
        "",
        *_optimize(results),
        *_closed_tables(results),
        *_open_tables(results),
        "## REST and gRPC",
        "",
        *_grpc(results),
        "## Load shedding",
        "",
        *_shedding(results),
        "## Alias move under load",
        "",
        *_swap(results),
        "## Memory",
        "",
        *_memory(results),
        "## Startup",
        "",
        *_startup(results),
        "## Command line",
        "",
        *_cli(results),
        "## GPU",
        "",
        results.get("gpu", {}).get("status", "not checked"),
        "",
        "## Profiles",
        "",
        *(_profiles(results) or ["No profile was taken.", ""]),
        "## Failures",
        "",
        *([f"- {failure}" for failure in results["failures"]] or ["None."]),
        "",
    ]
    return "\n".join(lines)


def _optimize(results: dict[str, Any]) -> list[str]:
    """What optimize registered (converter, error, in-process speed-up as it measured it, each
    converter's fate), then the raw in-process rows of each original and optimized runtime."""
    records = results.get("optimize") or []
    if not records:
        return ["Not measured.", ""]
    refused = [r for r in records if "refused" in r]
    records = [r for r in records if "refused" not in r]
    lines = _table(
        [
            "model",
            "optimized",
            "converter",
            "max error",
            "speed-up (batch: x)",
            "served",
            "attempts",
        ],
        [
            [
                r["model"],
                r["optimized"],
                f"{r['converter']} {r['converter_version']}",
                f"{r['max_error']:.2g}",
                ", ".join(f"{k}: {v}" for k, v in r["speedup"].items()),
                "yes" if r.get("served") else "no",
                "; ".join(
                    f"{a['converter']}: {'passed' if a['passed'] else a['reason']}"
                    for a in r.get("attempts", [])
                ),
            ]
            for r in records
        ],
    )
    if refused:
        lines += _table(
            ["model", "target", "refused (nothing registered)"],
            [[r["model"], r["target"], r["refused"]] for r in refused],
        )
    lines += _table(
        [
            "runtime (as Dockyard loads it, predict_proba, 1 thread)",
            "batch",
            "rows/s",
            "ms per call",
        ],
        [
            [r["model"], r["batch"], r["rows_per_s"], r["ms_per_call"]]
            for r in results.get("optimize_raw", [])
        ],
    )
    return lines


def _grpc(results: dict[str, Any]) -> list[str]:
    measured = grpc_bench.rows(results)
    if measured is None:
        return ["Not measured.", ""]
    setup, rows = measured
    return [setup, "", *_table(grpc_bench.ROW_HEADER, rows)]


def _shedding(results: dict[str, Any]) -> list[str]:
    measured = shedding.rows(results)
    if measured is None:
        return ["Not measured.", ""]
    setup, rows = measured
    return [setup, "", *_table(shedding.ROW_HEADER, rows)]


def _swap(results: dict[str, Any]) -> list[str]:
    measured = swap.rows(results)
    if measured is None:
        return ["Not measured.", ""]
    setup, rows = measured
    return [setup, "", *_table(swap.ROW_HEADER, rows)]


def _memory(results: dict[str, Any]) -> list[str]:
    memory = results.get("memory")
    if not memory:
        return ["Not measured.", ""]
    rows = [
        [
            f"--workers {n}",
            memory[f"workers_{n}"]["processes"],
            memory[f"workers_{n}"]["rss_mb"],
            memory[f"workers_{n}"]["pss_mb"],
        ]
        for n in (1, 2)
        if f"workers_{n}" in memory
    ]
    return [
        f"Model `big`: {memory['description']} ({memory['weights_mb']:.0f} MB of weights), "
        f"after {memory['warmup_requests']} warm-up requests. RSS counts shared pages once per "
        "process; PSS divides them.",
        "",
        *_table(["dockyard serve", "processes", "RSS MB (sum)", "PSS MB (sum)"], rows),
    ]


def _startup(results: dict[str, Any]) -> list[str]:
    lines = []
    for key, where in (
        ("startup_core", "Core install (what a serving machine has: `pip install dockyard`)"),
        ("startup", "Dev venv (every extra, torch and pytest included)"),
    ):
        startup = results.get(key)
        if not startup or "median_s" not in startup:
            lines.append(f"- {where}: not measured.")
            continue
        runs = ", ".join(f"{s:.2f}" for s in startup["runs_s"])
        lines.append(
            f"- {where}: `{startup['command']}` to the first 200 from `/v2/health/ready`: "
            f"median {startup['median_s']:.2f} s (runs: {runs})."
        )
    return [*lines, ""]


def _cli(results: dict[str, Any]) -> list[str]:
    cli = results.get("cli")
    if not cli:
        return ["Not measured.", ""]
    return [
        f"Seconds from spawning `dockyard …` to its exit (median of {cli['runs']} runs after an "
        f"untimed one), {cli['models']} in the home, {cli['rows']} rows predicted "
        "(benchmarks/cli_timings.py).",
        "",
        *cli_timings.markdown_table(cli),
    ]


def write(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    markdown_path, json_path = folder / "RESULTS.md", folder / "results.json"
    markdown_path.write_text(markdown(results))
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return markdown_path, json_path
