"""The README's quickstart, every shell and Python block of it, run in order in one shell as a user
pastes them into a terminal in the checkout.

Only what must differ on a test machine is changed: the port (a free one instead of 8000), and the
checkout's path where a block names the checkout (`make install`, `.venv/bin/activate`), because
the blocks run in a scratch folder so that the files they make stay out of the checkout.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from servers import free_port

pytestmark = pytest.mark.e2e
CHECKOUT = Path(__file__).resolve().parents[2]
README = CHECKOUT / "README.md"
PYTHON_END = "END_OF_README_PYTHON_BLOCK"


def quickstart_blocks() -> list[tuple[str, str]]:
    """The quickstart's fenced blocks, in order, as (language, code)."""
    section = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(python|bash)\n(.*?)```", section, flags=re.S)


def as_one_script(blocks: list[tuple[str, str]], port: int) -> str:
    """Shell blocks as they are; a Python block as the activated environment's ``python`` would
    run it pasted into a file."""
    lines = ["set -euo pipefail"]
    for language, code in blocks:
        if language == "python":
            lines.append(f"python - <<'{PYTHON_END}'\n{code}{PYTHON_END}")
        else:
            lines.append(code)
    script = "\n".join(lines)
    script = re.sub(r"\bmake install\b", f"make -C {CHECKOUT} install", script)
    script = script.replace(". .venv/bin/activate", f". {CHECKOUT}/.venv/bin/activate")
    return re.sub(
        r"(localhost|127\.0\.0\.1):8000|--port 8000",
        lambda match: match.group(0).replace("8000", str(port)),
        script,
    )


def test_the_quickstart_has_every_step() -> None:
    """The blocks the run below relies on are there, so it cannot pass by skipping one."""
    blocks = quickstart_blocks()
    text = "\n".join(code for _, code in blocks)
    for step in (
        "make install",
        "register_model(",
        "dockyard serve",
        "dockyard.Client(",
        "kill %1",
        "skops.io.dump(",
        "dockyard models register model.skops",
        "dockyard predict",
    ):
        assert step in text, step
    assert [language for language, _ in blocks].count("python") >= 3


@pytest.mark.timeout(300)
def test_the_quickstart_runs_as_pasted(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DOCKYARD_", "VIRTUAL"))
    }
    env.update(HOME=str(tmp_path), DOCKYARD_HOME=str(home))
    script = as_one_script(quickstart_blocks(), free_port())

    shell = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = shell.communicate(timeout=240)
    finally:
        # Whatever the outcome, nothing the blocks started outlives the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == 0, output

    assert re.search(r"^iris:1$", output, flags=re.M), output  # register_model printed the ref
    assert '"name":"predict"' in output.replace(" ", ""), output  # curl got a V2 answer
    assert re.search(r"^\[0\]$", output, flags=re.M), output  # the client's prediction
    assert re.search(r"fraud\s.*staging", output), output  # models list shows the alias
    with (work / "scores.csv").open(newline="") as handle:
        scores = list(csv.DictReader(handle))
    assert len(scores) == 5
    assert {row["predict"] for row in scores} <= {"0", "1"}
    assert not (tmp_path / ".dockyard").exists()  # only the home the shell was given was used
