"""Importing skops without torch: ``import skops.io`` lists scikit-learn's estimators, which imports
every package under ``sklearn``, its torch array adapter too (and pytest, for scikit-learn's test
markers). Dockyard keeps them out of that import; the list must come out as with them. Each case
runs in a new interpreter, since this one has imported skops (and maybe torch) already."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from dockyard.runtimes.skops_files import KEPT_OUT

IMPORT_AND_COMPARE = """
import json, sys
from dockyard.runtimes.skops_files import import_skops_io

skops_io = import_skops_io()
from skops.io import _trusted_types
kept_out = sorted(name for name in ("torch", *sys.argv[1:]) if name in sys.modules)
listed = list(_trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES)

from sklearn.utils import all_estimators
from skops.io._utils import get_type_name
everything = [get_type_name(cls) for _, cls in all_estimators()]
print(json.dumps({
    "kept_out": kept_out,
    "listed": listed,
    "expected": [name for name in everything if name.startswith("sklearn.")],
    "finders": [type(finder).__name__ for finder in sys.meta_path],
}))
"""


def _import_in_a_new_interpreter() -> dict[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_COMPARE, *sorted(KEPT_OUT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result: dict[str, list[str]] = json.loads(done.stdout)
    return result


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_skops_is_imported_without_torch_and_lists_the_same_estimators() -> None:
    result = _import_in_a_new_interpreter()

    assert result["kept_out"] == []
    assert result["listed"] == result["expected"]
    assert len(result["listed"]) > 100
    assert "_KeepOut" not in result["finders"]  # the import hook is gone afterwards
