"""What pyproject.toml says of the supported Pythons is what ``make test-pythons`` tests."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _nox_pythons() -> list[str]:
    """``PYTHONS`` of noxfile.py, read without importing nox."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [
            t.id for t in node.targets if isinstance(t, ast.Name)
        ] == ["PYTHONS"]:
            value = ast.literal_eval(node.value)
            assert isinstance(value, list)
            return [str(item) for item in value]
    raise AssertionError("noxfile.py has no PYTHONS")


def test_the_classifiers_name_the_pythons_make_test_pythons_runs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    classified = [
        match.group(1)
        for classifier in project["classifiers"]
        if (match := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", classifier))
    ]
    pythons = _nox_pythons()
    assert classified == pythons
    assert project["requires-python"] == f">={pythons[0]}"
