"""Registering a model: the one implementation behind the CLI, ``POST /api/models`` and
``dockyard.register_model``.

Detect the framework, save in a safe format, store the artifact content-addressed, infer the
signature, record lineage, load the stored artifact back and predict reference rows, profile the
reference data and the predictions on it (``monitoring.profile``: what live drift compares with),
and only then commit the version in one transaction. A failure before the commit deletes the
blob it stored unless something else uses it; a killed registration's leftovers go at the next
start (``staging.sweep``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.errors import InvalidInput
from dockyard.governance.privacy import screen_registration
from dockyard.monitoring.profile import capture_profile
from dockyard.registry.artifacts import file_sha256
from dockyard.registry.audit import AuditEntry
from dockyard.registry.lineage import capture_lineage
from dockyard.registry.records import ArtifactRef, ModelVersion, Signature
from dockyard.registry.refs import check_name
from dockyard.registry.signatures import (
    infer_signature,
    parse_signature,
    reference_input,
)
from dockyard.runtimes.base import Runtime, SavedModel, row_count
from dockyard.runtimes.detect import detect_framework, framework_module
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, local_user, require
from dockyard.services import changes
from dockyard.services.staging import claim, discard_if_unused, staging_folder
from dockyard.services.workspace import Workspace

logger = logging.getLogger(__name__)
REFERENCE_ROWS = 5
PROFILE_ROWS = 10_000
"""The most reference rows predicted for the profile of the outputs (evenly spaced)."""
PROFILE_BATCH = 1_000
UNNAMED_INPUT = "input-0"
"""The name a signature gives a tensor model's one input when nothing names it."""


@dataclass(frozen=True)
class Registration:
    """Everything a caller may say about a model being registered."""

    name: str
    reference_data: Any = None
    framework: str | None = None
    signature: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    allow_pickle: bool = False
    trusted_types: Sequence[str] = ()
    entrypoint: str | None = None
    input_names: Sequence[str] | None = None
    feature_names: Sequence[str] | None = None
    alias: str | None = None
    cwd: Path | None = None
    parent: str | None = None
    """The version this one was retrained from; recorded in its lineage."""


def register(
    workspace: Workspace, model: Any, request: Registration, actor: Principal | None = None
) -> ModelVersion:
    """Register ``model`` (an in-memory model or a path to a saved one) as a new version, as
    ``actor`` (default: the local user); a model file that may run code when loaded (pickle,
    extra trusted types) needs the ``register_code`` permission too."""
    actor = actor or local_user()
    require(actor, SERVICES["register"], request.name)
    if request.allow_pickle or request.trusted_types:
        require(actor, SERVICES["register_code"], request.name)
    if request.alias is not None:
        require(actor, SERVICES["set_alias"], request.name)
    check_name(request.name)
    if request.alias is not None:
        check_name(request.alias, "alias")
        changes.refuse_protected(workspace, request.name, request.alias)
    if isinstance(model, str):
        model = Path(model)
    if request.reference_data is None and request.signature is None:
        # Each front end asks for it in its own words first (--reference, reference_data=,
        # the 'reference' form field); this is the rule they all follow.
        raise InvalidInput(
            "reference data is required (it gives the signature and the rows Dockyard predicts "
            "before accepting the model), unless an explicit signature is given"
        )
    framework = request.framework or detect_framework(model)
    module = framework_module(framework)
    tabular = _is_tabular(framework, module.tabular, request.reference_data)

    # The staging folder lives until the version is committed: its claim on the blob keeps a
    # concurrent failed registration of the same bytes from deleting it.
    with staging_folder(workspace.home.tmp, "register") as folder:
        saved = module.save(model, folder, **_save_options(framework, request, tabular))
        digest = file_sha256(saved.path)
        claim(folder, digest)
        existed = workspace.artifacts.exists(digest)
        try:
            version = _store_and_commit(
                workspace, framework, saved, digest, request, tabular, actor
            )
        except BaseException:
            if not existed:
                discard_if_unused(folder, digest, workspace.artifacts, workspace.uses_artifact)
            raise
    logger.info("registered %s (%s, artifact %s)", version.ref, framework, digest[:12])
    if request.alias is not None:
        version = changes.set_alias(workspace, actor, request.name, request.alias, version.version)
    return version


def _store_and_commit(
    workspace: Workspace,
    framework: str,
    saved: SavedModel,
    digest: str,
    request: Registration,
    tabular: bool,
    actor: Principal,
) -> ModelVersion:
    """Store the saved model, load it back from the store, check it and commit the version."""
    workspace.artifacts.put(saved.path, digest)
    artifact = ArtifactRef(digest=digest, format=saved.format, options=dict(saved.options))
    runtime = workspace.load_artifact(
        framework, artifact, request.allow_pickle, tuple(request.trusted_types)
    )
    signature = _checked_signature(runtime, request, tabular)
    reference = request.reference_data
    profile = None
    if reference is not None:
        profile = capture_profile(
            reference, signature, _reference_predictions(runtime, signature, reference)
        )
    # Columns that look personal are flagged; their values stay out of the stored profile.
    personal_data, profile = screen_registration(
        workspace.settings, request.name, signature, profile
    )
    return workspace.store.create_version(
        model=request.name,
        framework=framework,
        artifact=artifact,
        signature=signature,
        lineage=capture_lineage(
            request.reference_data,
            request.cwd,
            _reference_names(request, runtime, signature),
            request.parent,
        ),
        allow_pickle=request.allow_pickle,
        trusted_types=tuple(request.trusted_types),
        metrics=dict(request.metrics),
        params=dict(request.params),
        tags=dict(request.tags),
        description=request.description,
        created_by=actor.actor,
        profile=profile,
        personal_data=personal_data,
        audit=AuditEntry(
            actor.actor,
            "model.register",
            "",
            request.name,
            {
                "framework": framework,
                "artifact": digest,
                "format": saved.format,
                "allow_pickle": request.allow_pickle,
                "trusted_types": list(request.trusted_types),
                "parent": request.parent,
            },
        ),
    )


def _reference_predictions(
    runtime: Runtime, signature: Signature, reference: Any
) -> dict[str, np.ndarray]:
    """The model's outputs on up to ``PROFILE_ROWS`` reference rows, evenly spaced (a reference
    sorted by time is sampled across its span), predicted ``PROFILE_BATCH`` rows at a time
    through the same validation a request gets: a row the model cannot answer fails the
    registration, as one of the first rows does."""
    step = max(1, -(-_row_total(reference) // PROFILE_ROWS))
    sample = _rows(reference, slice(None, None, step))
    parts = [
        runtime.predict(
            reference_input(
                signature, _rows(sample, slice(start, start + PROFILE_BATCH)), PROFILE_BATCH
            ),
            (),
        )
        for start in range(0, _row_total(sample), PROFILE_BATCH)
    ]
    return {name: np.concatenate([np.asarray(part[name]) for part in parts]) for name in parts[0]}


def _row_total(reference: Any) -> int:
    if isinstance(reference, Mapping):
        return len(np.asarray(next(iter(reference.values()))))
    return len(reference) if hasattr(reference, "iloc") else len(np.asarray(reference))


def _rows(reference: Any, rows: slice) -> Any:
    """Some rows of reference data: a DataFrame's, an array's, or each array of a dict's."""
    if isinstance(reference, Mapping):
        return {name: np.asarray(values)[rows] for name, values in reference.items()}
    return reference.iloc[rows] if hasattr(reference, "iloc") else np.asarray(reference)[rows]


def _reference_names(
    request: Registration, runtime: Runtime, signature: Signature
) -> list[str] | None:
    """What an array of reference data holds, for the lineage's data schema: a table's columns
    (the feature names given, as a CSV file's header gives them, else those of an explicit
    signature, else the model's own) or a tensor model's one named input. None for an array
    nothing names (its schema stays one ``input`` entry) and for a mapping; a DataFrame names its
    columns itself (the lineage takes its names, not these)."""
    reference = request.reference_data
    if reference is None or isinstance(reference, Mapping):
        return None
    if signature.tabular:
        names = request.feature_names
        if names is None and request.signature is not None:
            names = [spec.name for spec in signature.inputs]
        if names is None:
            names = getattr(runtime, "feature_names", None)
        shape = np.shape(reference)
        if names is None or len(shape) != 2 or len(names) != shape[1]:
            return None
        return [str(name) for name in names]
    if len(signature.inputs) == 1 and signature.inputs[0].name != UNNAMED_INPUT:
        return [signature.inputs[0].name]
    return None


def _is_tabular(framework: str, default: bool, reference_data: Any) -> bool:
    """Python functions take a table when their reference data is one; the rest know their kind."""
    if framework != "pyfunc":
        return default
    return not isinstance(reference_data, Mapping) and np.ndim(reference_data) == 2


def _save_options(framework: str, request: Registration, tabular: bool) -> dict[str, Any]:
    """The keyword arguments each framework's ``save`` understands."""
    if framework == "sklearn":
        return {"allow_pickle": request.allow_pickle}
    if framework == "pyfunc":
        return {"entrypoint": request.entrypoint, "tabular": tabular}
    if framework == "torch":
        options: dict[str, Any] = {}
        if request.input_names:
            options["input_names"] = list(request.input_names)
        if request.reference_data is not None and not isinstance(request.reference_data, Mapping):
            options["example_input"] = np.asarray(request.reference_data)[:REFERENCE_ROWS]
        return options
    return {}


def _checked_signature(runtime: Runtime, request: Registration, tabular: bool) -> Signature:
    """The signature (explicit, or inferred from the reference data and the outputs), after
    predicting reference rows through the same validation a request gets: a model that fails or
    does not answer one prediction per row is refused here, before anything is committed."""
    declared = parse_signature(request.signature) if request.signature is not None else None
    reference = request.reference_data
    if reference is None:
        assert declared is not None  # register() refuses a request with neither
        return declared
    input_names = request.input_names or getattr(runtime, "input_names", None)

    def inferred(outputs: Mapping[str, np.ndarray]) -> Signature:
        return infer_signature(
            reference,
            outputs,
            tabular=tabular,
            input_names=input_names,
            feature_names=request.feature_names,
        )

    draft = declared or inferred({})
    rows = reference_input(draft, reference, REFERENCE_ROWS)
    outputs = runtime.predict(rows, ())
    expected = row_count(rows)
    for name, values in outputs.items():
        if len(values) != expected:
            raise InvalidInput(
                f"model output {name!r} has {len(values)} rows for {expected} input rows; "
                "a model must return one prediction per row"
            )
    return declared or inferred(outputs)
