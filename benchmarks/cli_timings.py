"""How long the ``dockyard`` command takes to answer: ``--version``, ``--help``, ``models list`` and
``predict`` of a few rows, each run as a fresh process (what a user waits for at the prompt).

Builds a temporary home (``DOCKYARD_HOME``) with two small scikit-learn models trained on seeded
synthetic data, writes a 5-row CSV, then runs every command ``--runs`` times (after one untimed
warm-up run that fills the page and bytecode caches) with this venv's ``dockyard`` entry point.
Prints a Markdown table; ``--json PATH`` writes the results too. ``make bench`` runs it as a
section.

    .venv/bin/python benchmarks/cli_timings.py [--runs 5] [--json cli.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FEATURES = 8
TRAIN_ROWS = 500
PREDICT_ROWS = 5
SEED = 0
RUNS = 5
MODELS = ("churn", "fraud")
PREDICTED = MODELS[0]
TARGETS_S = {
    "dockyard --version": 0.3,
    "dockyard --help": 0.3,
    "dockyard models list": 0.8,
    f"dockyard predict {PREDICTED} --input rows.csv": 3.0,
}
"""Each command (as shown) and the most its median may take, in seconds."""


def entry_point() -> Path:
    """The ``dockyard`` script beside this interpreter (the venv's)."""
    return Path(sys.executable).parent / "dockyard"


def build_home(folder: Path) -> tuple[Path, Path]:
    """A home with two registered scikit-learn models and a CSV of ``PREDICT_ROWS`` rows to score;
    returns (home, csv)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    import dockyard

    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(TRAIN_ROWS, FEATURES))
    y = (x @ rng.normal(size=FEATURES) > 0).astype(np.int64)
    home = folder / "home"
    estimators = {
        MODELS[0]: make_pipeline(StandardScaler(), LogisticRegression()),
        MODELS[1]: DecisionTreeClassifier(max_depth=4, random_state=SEED),
    }
    for name, estimator in estimators.items():
        estimator.fit(x, y)
        dockyard.register_model(estimator, name, reference_data=x[:100], alias="staging", home=home)
    rows = folder / "rows.csv"
    with rows.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"x{j}" for j in range(FEATURES)])
        writer.writerows(x[:PREDICT_ROWS].round(6).tolist())
    return home, rows


def time_command(argv: list[str], env: dict[str, str], cwd: Path, runs: int) -> list[float]:
    """Seconds of each of ``runs`` runs (after an untimed one); a failing run stops everything."""
    seconds = []
    for run in range(runs + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
            )
        if run > 0:
            seconds.append(elapsed)
    return seconds


def measure(runs: int = RUNS, executable: Path | None = None) -> dict[str, Any]:
    """Build the home, time each command; the results as ``--json`` writes them."""
    dockyard = str(executable or entry_point())
    folder = Path(tempfile.mkdtemp(prefix="dockyard-cli-"))
    try:
        home, rows = build_home(folder)
        env = {**os.environ, "DOCKYARD_HOME": str(home)}
        # As installed: the bytecode cache is used (the untimed first run writes it).
        for name in ("DOCKYARD_URL", "DOCKYARD_DEBUG", "PYTHONDONTWRITEBYTECODE"):
            env.pop(name, None)
        commands = []
        for shown, limit in TARGETS_S.items():
            argv = [dockyard, *shown.split()[1:]]
            seconds = time_command(argv, env, folder, runs)
            median = statistics.median(seconds)
            commands.append(
                {
                    "command": shown,
                    "runs_s": seconds,
                    "median_s": median,
                    "min_s": min(seconds),
                    "max_s": max(seconds),
                    "target_s": limit,
                    "passed": median <= limit,
                }
            )
            print(f"  {shown}: median {median:.2f} s (target {limit:g} s)", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "executable": dockyard,
        "runs": runs,
        "rows": PREDICT_ROWS,
        "models": f"{len(MODELS)} scikit-learn models ({', '.join(MODELS)})",
        "commands": commands,
    }


def markdown_table(results: dict[str, Any]) -> list[str]:
    """The results as Markdown lines: one row per command."""
    lines = [
        "| command | median s | min s | max s | target s | result |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["commands"]:
        verdict = "pass" if row["passed"] else "**FAIL**"
        lines.append(
            f"| `{row['command']}` | {row['median_s']:.2f} | {row['min_s']:.2f} | "
            f"{row['max_s']:.2f} | {row['target_s']:g} | {verdict} |"
        )
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=RUNS, help="timed runs per command")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--executable", type=Path, help="a dockyard script (default: this venv's)")
    args = parser.parse_args()
    results = measure(args.runs, args.executable)
    print()
    print(
        f"`{results['executable']}`, {results['models']} in the home, "
        f"{results['rows']} rows predicted; {results['runs']} runs per command after a warm-up."
    )
    print()
    print("\n".join(markdown_table(results)))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
