"""Dockyard's own allow-list of the types a skops artifact may name.

A skops file can ask the loader to create any type it names, set its state, call it with arguments
from the file (``ConstructorFromReduceNode``) and later free it, so a name is approved only when the
operator listed it at registration (``--trusted-type``) or it is on an explicit list of what
scikit-learn models are made of: the public estimators, the internal classes fitted estimators
hold, their numpy and scipy containers and a few builtins. Nothing is approved for the package it
lives in: ``numpy.lib.npyio.DataSource``, whose ``__del__`` deletes a folder, is numpy too.
"""

from __future__ import annotations

import functools
import importlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

BUILTIN_NAMES = frozenset(
    f"builtins.{name}"
    for name in (
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
    )
) | {
    "collections.OrderedDict",
    "collections.defaultdict",
    # HistGradientBoosting on a DataFrame with categorical columns holds
    # functools.partial(check_array, ...); skops builds a partial only of an approved function.
    "functools.partial",
}
"""Containers and scalars skops stores plain Python values as."""

DISTANCE_METRICS = tuple(
    f"{metric}Distance{bits}"
    for metric in (
        "BrayCurtis",
        "Canberra",
        "Chebyshev",
        "Dice",
        "Euclidean",
        "Hamming",
        "Haversine",
        "Jaccard",
        "Kulsinski",
        "Mahalanobis",
        "Manhattan",
        "Matching",
        "Minkowski",
        "RogersTanimoto",
        "RussellRao",
        "SEuclidean",
        "SokalMichener",
        "SokalSneath",
        "WMinkowski",
    )
    for bits in (64, 32)
)
"""The neighbour searches' metrics; ``PyFuncDistance`` (a metric that calls a function) is not."""

SKLEARN_PARTS: Mapping[str, tuple[str, ...]] = {
    # The fitted structure of trees, forests and both kinds of gradient boosting.
    "sklearn.tree._tree": ("Tree",),
    "sklearn.ensemble._hist_gradient_boosting.predictor": ("TreePredictor",),
    "sklearn.ensemble._hist_gradient_boosting.binning": ("_BinMapper",),
    # Losses and links of gradient boosting, generalized linear models and SGD.
    "sklearn._loss.loss": (
        "AbsoluteError",
        "ExponentialLoss",
        "HalfBinomialLoss",
        "HalfBinomialLossArrayAPI",
        "HalfGammaLoss",
        "HalfMultinomialLoss",
        "HalfMultinomialLossArrayAPI",
        "HalfPoissonLoss",
        "HalfPoissonLossArrayAPI",
        "HalfSquaredError",
        "HalfTweedieLoss",
        "HalfTweedieLossIdentity",
        "HuberLoss",
        "PinballLoss",
    ),
    "sklearn._loss._loss": (
        "CyAbsoluteError",
        "CyExponentialLoss",
        "CyHalfBinomialLoss",
        "CyHalfGammaLoss",
        "CyHalfMultinomialLoss",
        "CyHalfPoissonLoss",
        "CyHalfSquaredError",
        "CyHalfTweedieLoss",
        "CyHalfTweedieLossIdentity",
        "CyHuberLoss",
        "CyPinballLoss",
    ),
    "sklearn._loss.link": (
        "HalfLogitLink",
        "IdentityLink",
        "Interval",
        "LogLink",
        "LogitLink",
        "MultinomialLogit",
    ),
    "sklearn.linear_model._sgd_fast": (
        "EpsilonInsensitive",
        "Hinge",
        "Huber",
        "Log",
        "ModifiedHuber",
        "SquaredEpsilonInsensitive",
        "SquaredHinge",
        "SquaredLoss",
    ),
    # Neighbour searches.
    "sklearn.neighbors": ("BallTree", "KDTree"),
    "sklearn.metrics._dist_metrics": DISTANCE_METRICS,
    # Gaussian processes, networks, calibration, clustering, multiclass, column selection.
    "sklearn.gaussian_process.kernels": (
        "CompoundKernel",
        "ConstantKernel",
        "DotProduct",
        "ExpSineSquared",
        "Exponentiation",
        "Matern",
        "PairwiseKernel",
        "Product",
        "RBF",
        "RationalQuadratic",
        "Sum",
        "WhiteKernel",
    ),
    "sklearn.gaussian_process._gpc": ("_BinaryGaussianProcessClassifierLaplace",),
    "sklearn.neural_network._stochastic_optimizers": ("AdamOptimizer", "SGDOptimizer"),
    "sklearn.calibration": ("_CalibratedClassifier", "_SigmoidCalibration"),
    "sklearn.cluster._bisect_k_means": ("_BisectingTree",),
    "sklearn.multiclass": ("_ConstantPredictor",),
    "sklearn.compose": ("make_column_selector",),
    # What searches and threshold tuning keep: scorers, splitters, metadata routing.
    "sklearn.metrics._scorer": (
        "_CurveScorer",
        "_MultimetricScorer",
        "_PassthroughScorer",
        "_Scorer",
    ),
    "sklearn.model_selection": (
        "GroupKFold",
        "GroupShuffleSplit",
        "KFold",
        "LeaveOneGroupOut",
        "LeaveOneOut",
        "LeavePGroupsOut",
        "LeavePOut",
        "PredefinedSplit",
        "RepeatedKFold",
        "RepeatedStratifiedKFold",
        "ShuffleSplit",
        "StratifiedGroupKFold",
        "StratifiedKFold",
        "StratifiedShuffleSplit",
        "TimeSeriesSplit",
    ),
    "sklearn.utils": ("Bunch",),
    "sklearn.utils._metadata_requests": (
        "MetadataRequest",
        "MetadataRouter",
        "MethodMapping",
        "MethodMetadataRequest",
        "MethodPair",
        "RouterMappingPair",
    ),
    # Functions estimators keep as parameters (SelectKBest's score_func, FeatureAgglomeration's
    # pooling_func, BisectingKMeans's inner k-means, HistGradientBoosting's preprocessor).
    "sklearn.utils.validation": ("check_array",),
    "sklearn.feature_selection": (
        "chi2",
        "f_classif",
        "f_oneway",
        "f_regression",
        "mutual_info_classif",
        "mutual_info_regression",
        "r_regression",
    ),
    "sklearn.cluster._kmeans": ("_kmeans_single_elkan", "_kmeans_single_lloyd"),
}
"""Classes and functions fitted estimators hold that are not estimators themselves."""

NUMPY_PARTS: Mapping[str, tuple[str, ...]] = {
    "numpy": (
        "ndarray",
        "dtype",
        # reductions a model may keep as a function (pooling_func, FunctionTransformer)
        "clip",
        "max",
        "mean",
        "median",
        "min",
        "nanmean",
        "nanmedian",
        "prod",
        "std",
        "sum",
        "var",
    ),
    "numpy.ma": ("MaskedArray",),
    "numpy.random": ("Generator", "RandomState"),
}
"""Arrays, dtypes and random states; numpy's scalar types and ufuncs are added in code."""

SCIPY_PARTS: Mapping[str, tuple[str, ...]] = {
    "scipy.sparse": tuple(
        f"{layout}_{kind}"
        for layout in ("bsr", "coo", "csc", "csr", "dia", "dok", "lil")
        for kind in ("matrix", "array")
    ),
    # SplineTransformer's B-splines, and the array function each of them keeps; from scipy 1.18
    # a BSpline delegates to a NumPy-backend _BSpline it holds (absent before: skipped).
    "scipy.interpolate": ("BSpline",),
    "scipy.interpolate._bsplines": ("_BSpline",),
    "scipy._lib.array_api_compat.numpy": ("asarray",),
}
"""Sparse matrices and arrays, and what spline features hold; scipy.special's ufuncs in code."""

UFUNC_MODULES = ("numpy", "scipy.special._ufuncs", "scipy.special._special_ufuncs")
"""Modules whose ufuncs (pure element-wise math) are approved, under every name skops gives them."""


IGNORED_MODULE_PARTS = frozenset(
    {"tests", "externals", "setup", "conftest", "experimental", "estimator_checks"}
)
"""Module path parts whose classes ``sklearn.utils.all_estimators`` does not list."""


def refused_types(names: Iterable[str], operator_trusted: Iterable[str]) -> list[str]:
    """The names in ``names`` neither the operator nor Dockyard's allow-list approves, sorted."""
    approved = trusted_names() | set(operator_trusted)
    return sorted(name for name in set(names) - approved if not is_public_estimator(name))


def is_public_estimator(name: str) -> bool:
    """Whether ``name`` is a class ``sklearn.utils.all_estimators()`` lists, decided for this one
    name: all_estimators imports every scikit-learn module, seconds of every server's start-up.

    Its rules: a class (not abstract, not ``BaseEstimator`` itself, its name public) deriving from
    ``BaseEstimator`` and exported by a public module of scikit-learn (no ``_`` part, none of
    IGNORED_MODULE_PARTS). A class is found under its own ``module.Name``, as skops spells it, and
    its public module is the longest prefix of that module without a private part.
    """
    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    if parts[0] != "sklearn" or class_name.startswith("_") or class_name == "BaseEstimator":
        return False
    public = ".".join(itertools.takewhile(lambda part: not part.startswith("_"), parts))
    if public == "sklearn" or IGNORED_MODULE_PARTS.intersection(public.split(".")):
        return False
    from sklearn.base import BaseEstimator

    found = getattr(_import(module_name), class_name, None)
    return (
        isinstance(found, type)
        and f"{found.__module__}.{found.__name__}" == name
        and issubclass(found, BaseEstimator)
        and not getattr(found, "__abstractmethods__", None)
        and getattr(_import(public), class_name, None) is found
    )


@functools.cache
def trusted_names() -> frozenset[str]:
    """Dockyard's allow-list, as the ``module.Name`` strings skops writes (computed once).

    The tables above resolved in the installed versions (a name that does not exist there is
    skipped), numpy's scalar types and the ufuncs of ``UFUNC_MODULES``; the public estimators are
    checked name by name (``is_public_estimator``).
    """
    import numpy as np

    names = set(BUILTIN_NAMES)
    for table in (SKLEARN_PARTS, NUMPY_PARTS, SCIPY_PARTS):
        names.update(_name(found) for found in _resolve(table))
    names.update(_name(scalar) for scalar in set(np.sctypeDict.values()))
    names.update(_scorer_functions())
    for module_name in UFUNC_MODULES:
        module = _import(module_name)
        if module is not None:
            names.update(
                f"{module_name}.{attribute}"
                for attribute, value in vars(module).items()
                if isinstance(value, np.ufunc) and not attribute.startswith("_")
            )
    return frozenset(names)


def _scorer_functions() -> Iterator[str]:
    """The metric functions behind scikit-learn's named scorers (``scoring="roc_auc"``, ...)."""
    from sklearn.metrics import get_scorer, get_scorer_names

    for scorer_name in get_scorer_names():
        function = getattr(get_scorer(scorer_name), "_score_func", None)
        if callable(function):
            yield _name(function)


def _resolve(table: Mapping[str, tuple[str, ...]]) -> Iterator[object]:
    for module_name, attributes in table.items():
        module = _import(module_name)
        for attribute in attributes:
            found = getattr(module, attribute, None)
            if found is not None:
                yield found


def _import(module_name: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None


def _name(obj: Any) -> str:
    """``module.Name`` of a class or function, as skops records it."""
    return f"{obj.__module__}.{obj.__name__}"
