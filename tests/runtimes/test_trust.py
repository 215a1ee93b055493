"""Dockyard's own allow-list of the types a skops artifact names: a list, not whole packages."""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import warnings
from types import ModuleType

import numpy as np
import pytest
import sklearn
from sklearn.utils import all_estimators

from dockyard.runtimes.trust import is_public_estimator, refused_types, trusted_names


@pytest.mark.parametrize(
    "name",
    [
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.linear_model._logistic.LogisticRegression",
        "numpy.dtype",
        "numpy.float64",
        "numpy.log1p",
        "scipy.sparse._csr.csr_matrix",
        "functools.partial",
        "sklearn.utils.validation.check_array",
    ],
    ids=[
        "tree",
        "tree-predictor",
        "kd-tree",
        "estimator",
        "numpy-dtype",
        "numpy-scalar",
        "numpy-ufunc",
        "sparse-matrix",
        "partial",
        "check-array",
    ],
)
def test_types_common_models_need_are_trusted(name: str) -> None:
    assert refused_types([name], ()) == []


@pytest.mark.parametrize(
    "name",
    [
        "numpy.lib.npyio.DataSource",
        "numpy.lib._datasource.DataSource",
        "numpy.memmap",
        "numpy.load",
        "numpy.vectorize",
        "scipy.io.FortranFile",
        "sklearn.datasets.fetch_openml",
        "sklearn.utils.Bunch",
        "sklearn.base.defaultdict",
        "builtins.eval",
        "builtins.getattr",
        "operator.methodcaller",
        "os.system",
        "numpyevil.Thing",
        "sklearn.no_such_module.Thing",
        "sklearn.metrics._dist_metrics.PyFuncDistance64",
    ],
    ids=[
        "datasource-as-reported",
        "datasource-where-defined",
        "memmap-writes-files",
        "numpy-load",
        "vectorize-calls-anything",
        "scipy-io",
        "datasets-download",
        "re-exported-spelling",
        "re-exported-stdlib-class",
        "eval",
        "getattr",
        "methodcaller",
        "os-system",
        "lookalike-package",
        "missing",
        "metric-calling-a-function",
    ],
)
def test_dangerous_or_unknown_names_are_refused(name: str) -> None:
    assert refused_types([name], ()) == [name]


def test_operator_trusted_names_are_approved() -> None:
    assert refused_types(["mypkg.Model", "other.Model"], ["mypkg.Model"]) == ["other.Model"]


NUMPY_FUNCTIONS = {"clip", "max", "mean", "median", "min", "nanmean", "nanmedian", "prod", "std"}
NUMPY_FUNCTIONS |= {"sum", "var"}
SPARSE = {
    f"{layout}_{kind}"
    for layout in ("bsr", "coo", "csc", "csr", "dia", "dok", "lil")
    for kind in ("matrix", "array")
}
APPROVED_EXPORTS: dict[str, set[str]] = {
    "numpy.lib": set(),
    "numpy.lib.npyio": set(),
    "numpy.lib.format": set(),
    "numpy.ma": {"MaskType", "MaskedArray", "bool_", "masked_array"},
    "numpy.random": {"Generator", "RandomState"},
    "numpy.testing": set(),
    "numpy.ctypeslib": set(),
    "numpy.polynomial": set(),
    "scipy": set(),
    "scipy.io": set(),
    "scipy.io.matlab": set(),
    "scipy.sparse": SPARSE,
    "scipy.interpolate": {"BSpline"},
    "sklearn": set(),
    "sklearn.base": {"check_array", "defaultdict"},
    "sklearn.datasets": set(),
    "sklearn.utils": {"Bunch", "check_array"},
    "sklearn.pipeline": {"FeatureUnion", "Pipeline"},
    "joblib": set(),
    "builtins": {
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "int",
        "list",
        "set",
        "slice",
        "str",
        "tuple",
    },
    "collections": {"OrderedDict", "defaultdict"},
    "functools": {"partial"},
    **{
        module: set()
        for module in (
            "ctypes",
            "importlib",
            "io",
            "operator",
            "os",
            "pathlib",
            "pickle",
            "runpy",
            "shutil",
            "subprocess",
            "tempfile",
        )
    },
}
"""What each module may export that the allow-list approves (under the name the module gives it,
or where the object says it is defined); every other class or function it exports is refused."""


def exports(module: ModuleType) -> dict[str, object]:
    """The classes and functions ``module`` exports: its ``__all__``, else its public names."""
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated module attributes warn when read
        found = {name: getattr(module, name, None) for name in names}
    return {name: obj for name, obj in found.items() if callable(obj)}


def spellings(module: str, attribute: str, obj: object) -> set[str]:
    """The names a skops file could give ``obj``: the export, and where the object says it lives."""
    names = {f"{module}.{attribute}"}
    own = getattr(obj, "__name__", None)
    if isinstance(own, str):
        names.add(f"{pickle.whichmodule(obj, own)}.{own}")
    return names


def approved_exports(module: str) -> set[str]:
    return {
        attribute
        for attribute, obj in exports(importlib.import_module(module)).items()
        if any(not refused_types([name], ()) for name in spellings(module, attribute, obj))
    }


@pytest.mark.parametrize("module", list(APPROVED_EXPORTS), ids=list(APPROVED_EXPORTS))
def test_every_other_class_or_function_a_module_exports_is_refused(module: str) -> None:
    assert approved_exports(module) == APPROVED_EXPORTS[module]


def test_from_numpy_only_arrays_dtypes_scalars_ufuncs_and_reductions_are_approved() -> None:
    """Concrete scalar types (``numpy.float64``, not ``numpy.number``), ufuncs, a few reductions."""
    approved = approved_exports("numpy")
    exported = exports(np)
    expected = (
        {
            attribute
            for attribute, obj in exported.items()
            if isinstance(obj, np.ufunc) or obj in set(np.sctypeDict.values())
        }
        | {"ndarray", "dtype"}
        | NUMPY_FUNCTIONS
    )
    assert approved == expected
    assert {"memmap", "recarray", "matrix", "vectorize", "load", "save", "fromfile"}.isdisjoint(
        approved
    )


def test_nothing_on_the_list_has_a_finalizer() -> None:
    """A ``__del__`` runs on whatever state the file set (``DataSource`` deletes a folder)."""
    with_finalizer = []
    for name in trusted_names():
        module, _, attribute = name.rpartition(".")
        found = getattr(importlib.import_module(module), attribute)
        if isinstance(found, type) and any("__del__" in vars(cls) for cls in found.__mro__):
            with_finalizer.append(name)
    assert with_finalizer == []


def test_the_estimator_check_approves_exactly_what_all_estimators_lists() -> None:
    """``is_public_estimator`` decides one name at a time what ``all_estimators`` would list (it
    imports every scikit-learn module, too slow for a server's start-up)."""
    every_class: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn when imported
        for module_info in pkgutil.walk_packages(sklearn.__path__, prefix="sklearn."):
            if any(part in module_info.name for part in (".tests", "externals", "_build_utils")):
                continue
            module = importlib.import_module(module_info.name)
            every_class.update(
                f"{cls.__module__}.{cls.__name__}"
                for cls in vars(module).values()
                if isinstance(cls, type) and cls.__module__.startswith("sklearn")
            )
    # After the walk, which imports sklearn.experimental's enabling modules too.
    listed = {f"{cls.__module__}.{cls.__name__}" for _, cls in all_estimators()}
    assert {name for name in listed if not is_public_estimator(name)} == set()
    assert {name for name in every_class if is_public_estimator(name)} == listed
