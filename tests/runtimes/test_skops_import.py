"""Importing skops cheaply: ``import skops.io`` lists scikit-learn's estimators for its default
trust, which imports every package under ``sklearn`` (seconds of CPU at every server start), its
torch array adapter too (and pytest, for scikit-learn's test markers). Dockyard never uses that
trust — each load names the types it found, approved by its own allow-list — so it imports skops
without the list and without those modules. Each case runs in a new interpreter, since this one
has imported skops (and maybe torch) already."""

from __future__ import annotations

import json
import subprocess
import sys

from dockyard.runtimes.skops_files import KEPT_OUT

IMPORT_AND_LOOK = """
import json, sys
import sklearn.utils
listing = sklearn.utils.all_estimators

from dockyard.runtimes.skops_files import import_skops_io

skops_io = import_skops_io()
from skops.io import _trusted_types
print(json.dumps({
    "kept_out": sorted(name for name in ("torch", *sys.argv[1:]) if name in sys.modules),
    "listed": list(_trusted_types.SKLEARN_ESTIMATOR_TYPE_NAMES),
    "unused_packages": sorted(
        name for name in ("sklearn.gaussian_process", "sklearn.neural_network", "sklearn.mixture")
        if name in sys.modules
    ),
    "listing_restored": sklearn.utils.all_estimators is listing,
    "finders": [type(finder).__name__ for finder in sys.meta_path],
}))
"""


def test_skops_is_imported_without_listing_every_estimator_or_torch() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_AND_LOOK, *sorted(KEPT_OUT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    result = json.loads(done.stdout)

    assert result["kept_out"] == []
    assert result["listed"] == []  # skops's default trust names no estimator: Dockyard's decides
    assert result["unused_packages"] == []  # not every scikit-learn package was imported
    assert result["listing_restored"]  # scikit-learn's own function is back afterwards
    assert "_KeepOut" not in result["finders"]  # the import hook is gone afterwards
