"""Where a tree ensemble splits: each feature's thresholds, read through Treelite's importers from
the source model itself (whatever the candidate converter).

A conversion that stores thresholds in less precision (a float32 graph) or moves them answers
differently only for values between the old and the new threshold, which random rows seldom hit;
rows at each threshold and one step either side of it (``rows.split_rows``) always do.
"""

from __future__ import annotations

import logging

import numpy as np

from dockyard.errors import DockyardError
from dockyard.optimize.conversion import EXTRA, Source
from dockyard.optimize.treelite_import import FRAMEWORKS, import_trees
from dockyard.runtimes.base import import_extra

logger = logging.getLogger(__name__)
MAX_THRESHOLDS = 3_000
"""The most thresholds probed (three rows each); a bigger model's are sampled evenly."""
LEAF = -1


def split_points(source: Source) -> dict[int, np.ndarray]:
    """Feature index → its distinct thresholds, at most ``MAX_THRESHOLDS`` in all; empty for a
    model that is no tree ensemble Treelite reads (it is proven on the other rows alone)."""
    if source.framework not in FRAMEWORKS:
        return {}
    try:
        treelite = import_extra("treelite", "treelite", EXTRA)
        model, _, _ = import_trees(treelite, source)
    except DockyardError as exc:
        logger.debug("no split points for the proof: %s", exc)
        return {}
    pairs: list[tuple[int, float]] = []
    for index in range(int(model.num_tree)):
        tree = model.get_tree_accessor(index)
        inner = tree.get_field("cleft") != LEAF
        features = tree.get_field("split_index")[inner]
        thresholds = tree.get_field("threshold")[inner]
        pairs += zip(features.tolist(), thresholds.tolist(), strict=True)
    unique = sorted(set(pairs))
    if len(unique) > MAX_THRESHOLDS:
        picks = np.linspace(0, len(unique) - 1, MAX_THRESHOLDS).round().astype(np.int64)
        unique = [unique[i] for i in picks]
    found: dict[int, list[float]] = {}
    for feature, threshold in unique:
        found.setdefault(int(feature), []).append(float(threshold))
    return {feature: np.asarray(values) for feature, values in found.items()}
