"""Dockyard's own allow-list for the types a skops artifact names."""

from __future__ import annotations

import pytest

from dockyard.runtimes.trust import refused_types


@pytest.mark.parametrize(
    "name",
    [
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "numpy.dtype",
        "functools.partial",
        "sklearn.utils.validation.check_array",
    ],
    ids=["tree", "tree-predictor", "kd-tree", "numpy-dtype", "partial", "check-array"],
)
def test_types_common_models_need_are_trusted(name: str) -> None:
    assert refused_types([name], ()) == []


@pytest.mark.parametrize(
    "name",
    [
        "builtins.eval",
        "os.system",
        "numpy.memmap",
        "numpy.load",
        "scipy.io.FortranFile",
        "sklearn.base.defaultdict",
        "numpyevil.Thing",
        "sklearn.no_such_module.Thing",
    ],
    ids=[
        "eval",
        "os-system",
        "memmap-writes-files",
        "numpy-function",
        "scipy-io",
        "re-exported-stdlib-class",
        "lookalike-package",
        "missing",
    ],
)
def test_dangerous_or_unknown_names_are_refused(name: str) -> None:
    assert refused_types([name], ()) == [name]


def test_operator_trusted_names_are_approved() -> None:
    assert refused_types(["mypkg.Model", "other.Model"], ["mypkg.Model"]) == ["other.Model"]
