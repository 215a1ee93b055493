"""The proof rows: reference rows rebuilt from the profile (or given), then edge rows."""

from __future__ import annotations

import numpy as np
import pytest

from dockyard.errors import OptimizationRefused
from dockyard.optimize.rows import proof_rows
from dockyard.services.register import Registration, register
from dockyard.services.workspace import Workspace
from extras import needs_torch
from optimizing import FEATURES, trained


def test_rows_come_from_the_profile_with_edges_and_missing_values(workspace: Workspace) -> None:
    model, reference = trained("hist-classifier")
    version = register(workspace, model, Registration("m", reference_data=reference))
    assert all(spec.allow_nan for spec in version.signature.inputs)

    rows = proof_rows(version)

    table = np.asarray(rows.inputs)
    assert table.shape[1] == FEATURES
    assert len(table) == len(rows.kinds)
    reference_rows = rows.kinds.count("reference")
    assert reference_rows >= 2 * 500  # quantile rows and as many shuffled ones
    assert "edge: x0 = NaN" in rows.kinds
    assert "edge: x7 = +huge" in rows.kinds
    assert np.isnan(table[rows.kinds.index("edge: x3 = NaN"), 3])
    low = np.nanmin(reference[:, 0])
    assert table[rows.kinds.index("edge: x0 = min"), 0] == pytest.approx(low, rel=1e-6)
    # The shuffled rows are no longer sorted together: features vary independently.
    shuffled = table[reference_rows // 2 : reference_rows]
    assert not np.all(np.diff(shuffled[:, 0]) >= 0)


def test_no_missing_value_where_the_signature_refuses_them(workspace: Workspace) -> None:
    model, reference = trained("logistic")
    version = register(workspace, model, Registration("m", reference_data=reference))

    rows = proof_rows(version)

    assert not any("NaN" in kind or "inf" in kind for kind in rows.kinds)
    assert np.isfinite(np.asarray(rows.inputs)).all()


def test_given_reference_rows_are_used_as_they_are(workspace: Workspace) -> None:
    model, reference = trained("logistic")
    version = register(workspace, model, Registration("m", reference_data=reference))

    rows = proof_rows(version, reference[:40])

    np.testing.assert_array_equal(np.asarray(rows.inputs)[:40], reference[:40])
    assert rows.kinds[:40] == ("reference",) * 40


def test_a_version_without_a_profile_needs_reference_data(workspace: Workspace) -> None:
    model, _ = trained("logistic")
    signature = {
        "tabular": True,
        "inputs": [{"name": f"f{i}", "datatype": "FP64"} for i in range(FEATURES)],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1]}],
    }
    version = register(workspace, model, Registration("m", signature=signature))

    with pytest.raises(OptimizationRefused, match="no reference profile for 'f0'.*--reference"):
        proof_rows(version)


@needs_torch
def test_a_tensor_model_gets_its_rows_and_one_edge_row_per_extreme(
    workspace: Workspace,
) -> None:
    import torch

    rows = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    version = register(workspace, torch.nn.Linear(8, 2), Registration("m", reference_data=rows))

    proof = proof_rows(version, rows)

    assert isinstance(proof.inputs, dict)
    tensor = proof.inputs["input-0"]
    assert tensor.shape == (33, 8)
    np.testing.assert_array_equal(tensor[:30], rows)
    assert proof.kinds[30:] == (
        "edge: input-0 = zero",
        "edge: input-0 = -huge",
        "edge: input-0 = +huge",
    )
    assert (tensor[32] == np.float32(1e30)).all()


def test_a_tree_ensemble_is_probed_at_each_split(workspace: Workspace) -> None:
    from dockyard.optimize.sources import source_of
    from dockyard.optimize.splits import split_points

    model, reference = trained("hist-classifier")
    version = register(workspace, model, Registration("m", reference_data=reference))
    splits = split_points(source_of(version, workspace.load(version)))
    assert set(splits) <= set(range(FEATURES))
    threshold = float(splits[0][0])

    rows = proof_rows(version, splits=splits)

    table = np.asarray(rows.inputs)
    at = rows.kinds.index(f"split: x0 at {threshold!r}")
    assert rows.kinds[at - 1] == f"split: x0 just below {threshold!r}"
    assert table[at, 0] == threshold
    assert table[at - 1, 0] == np.nextafter(threshold, -np.inf)
    assert table[at + 1, 0] == np.nextafter(threshold, np.inf)
    assert sum(kind.startswith("split: ") for kind in rows.kinds) == 3 * sum(
        len(values) for values in splits.values()
    )
