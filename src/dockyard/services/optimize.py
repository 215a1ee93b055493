"""``dockyard optimize``: a registered version converted to a faster runtime, proven to predict
the same, timed, and registered as a new version of the same model.

Every converter the target names is tried on the version's model object: converted in memory,
loaded by its runtime from a staging folder, asked the proof rows (``optimize.rows``) and compared
with the source's answers (``optimize.equivalence``), then timed at batch 1 and at the model's
serving batch size. The fastest that passes (the geometric mean of both times) is stored
content-addressed, loaded back from the store (digest verified) and compared once more, and only
then committed, with the source's signature, profile, metrics and card (the same model, compiled)
and a lineage naming the source, the converter and its version, the tolerance, the error and the
speed-up. When none passes nothing is stored: OptimizationRefused names each converter's reason
and the worst row.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.errors import InvalidInput, OptimizationRefused
from dockyard.optimize.attempts import Attempt, difference, lineage_record, refusal
from dockyard.optimize.conversion import Converted, Converter, Source
from dockyard.optimize.equivalence import compare
from dockyard.optimize.rows import ProofRows, proof_rows
from dockyard.optimize.sources import source_of
from dockyard.optimize.splits import split_points
from dockyard.optimize.targets import AUTO, converters_for
from dockyard.optimize.timing import Latency, measure
from dockyard.registry.artifacts import file_sha256
from dockyard.registry.audit import AuditEntry
from dockyard.registry.lineage import package_versions
from dockyard.registry.records import ArtifactRef, ModelVersion
from dockyard.registry.refs import check_name
from dockyard.runtimes.base import LoadOptions
from dockyard.runtimes.detect import load_runtime
from dockyard.security.permissions import SERVICES
from dockyard.security.principals import Principal, local_user, require
from dockyard.services import changes
from dockyard.services.staging import claim, discard_if_unused, staging_folder
from dockyard.services.workspace import Workspace

logger = logging.getLogger(__name__)
DEFAULT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Optimization:
    """What the operator asked: the version, the target, the tolerance, an alias for the result,
    reference data (default: rows rebuilt from the version's profile) and the serving batch size
    (default: the model's ``max_batch_size``)."""

    ref: str
    target: str = AUTO
    tolerance: float = DEFAULT_TOLERANCE
    alias: str | None = None
    reference_data: Any = None
    batch_size: int | None = None


@dataclass(frozen=True)
class Optimized:
    """The new version, its source, the source's latency and every converter's attempt."""

    version: ModelVersion
    source: ModelVersion
    source_latency: Latency
    attempts: list[Attempt]
    chosen: Attempt


def optimize(
    workspace: Workspace,
    request: Optimization,
    actor: Principal | None = None,
    converters: Sequence[Converter] | None = None,
) -> Optimized:
    """Convert, prove, time and register; OptimizationRefused (nothing stored) when no converter
    gives a model that answers as the source does. ``converters``: those to try instead of the
    target's (a converter of the caller's own)."""
    actor = actor or local_user()
    if not request.tolerance >= 0:
        raise InvalidInput(f"tolerance must be 0 or more, got {request.tolerance}")
    if request.batch_size is not None and request.batch_size < 1:
        raise InvalidInput(f"batch size must be 1 or more, got {request.batch_size}")
    converters_for(request.target)  # an unknown target, before anything is loaded
    source = workspace.resolve(request.ref)
    require(actor, SERVICES["register"], source.model)
    if request.alias is not None:
        require(actor, SERVICES["set_alias"], source.model)
        check_name(request.alias, "alias")
        changes.refuse_protected(workspace, source.model, request.alias)
    batch = request.batch_size or workspace.settings.model_options(source.model).max_batch_size
    if converters is None:
        converters = converters_for(request.target, source.framework)
    if not converters:
        raise OptimizationRefused(
            f"{source.ref} was not optimized, nothing was registered: no converter of target "
            f"{request.target!r} takes a {source.framework} model (see docs/optimize.md)"
        )
    runtime = workspace.load(source)
    model = source_of(source, runtime)
    rows = proof_rows(source, request.reference_data, split_points(model))
    expected = runtime.predict(rows.inputs, ())
    source_latency = measure(runtime, rows.inputs, batch)
    with staging_folder(workspace.home.tmp, "optimize") as folder:
        tried = [
            _attempt(converter, model, rows, expected, request.tolerance, batch, folder)
            for converter in converters
        ]
        attempts = [attempt for attempt, _ in tried]
        passed = [(attempt, done) for attempt, done in tried if attempt.passed and done]
        if not passed:
            raise OptimizationRefused(refusal(source.ref, attempts))
        chosen, converted = min(passed, key=lambda pair: _cost(pair[0]))
        version = _commit(
            workspace,
            actor,
            source,
            converted,
            chosen,
            request,
            rows,
            expected,
            source_latency,
            folder,
        )
    logger.info("optimized %s as %s with %s", source.ref, version.ref, chosen.converter)
    if request.alias is not None:
        version = changes.set_alias(workspace, actor, version.model, request.alias, version.version)
    return Optimized(version, source, source_latency, attempts, chosen)


def _attempt(
    converter: Converter,
    model: Source,
    rows: ProofRows,
    expected: dict[str, np.ndarray],
    tolerance: float,
    batch: int,
    folder: Path,
) -> tuple[Attempt, Converted | None]:
    """Convert with one converter, load the result from the staging folder, compare and time;
    the attempt, and the conversion when it passed."""
    try:
        converted = converter.convert(model)
    except OptimizationRefused as exc:
        return Attempt(converter.name, converter.target, reason=exc.message), None
    path = _stage(folder, converted)
    try:
        runtime = load_runtime(
            converted.framework, path, LoadOptions(converted.format, converted.options)
        )
        actual = runtime.predict(rows.inputs, ())
    except Exception as exc:
        # The converted model is new code to this version: whatever it raises is its refusal.
        reason = f"the converted model failed to predict ({type(exc).__name__}: {exc})"
        return Attempt(converter.name, converter.target, converted.converter_version, reason), None
    comparison = compare(expected, actual)
    found = Attempt(
        converter.name,
        converter.target,
        converted.converter_version,
        comparison=comparison,
        worst_input=None if comparison.worst_row is None else rows.row(comparison.worst_row),
        worst_kind=None if comparison.worst_row is None else rows.kinds[comparison.worst_row],
    )
    if not comparison.passes(tolerance):
        reason = difference(comparison, tolerance, found.worst_kind or "", found.worst_input)
        return dataclasses.replace(found, reason=reason), None
    return dataclasses.replace(found, latency=measure(runtime, rows.inputs, batch)), converted


def _commit(
    workspace: Workspace,
    actor: Principal,
    source: ModelVersion,
    converted: Converted,
    chosen: Attempt,
    request: Optimization,
    rows: ProofRows,
    expected: dict[str, np.ndarray],
    source_latency: Latency,
    folder: Path,
) -> ModelVersion:
    """Store the chosen artifact, check it once more as loaded from the store, commit."""
    path = folder / chosen.converter / converted.filename
    digest = file_sha256(path)
    claim(folder, digest)
    existed = workspace.artifacts.exists(digest)
    try:
        workspace.artifacts.put(path, digest)
        artifact = ArtifactRef(digest, converted.format, dict(converted.options))
        stored = workspace.load_artifact(converted.framework, artifact)
        again = compare(expected, stored.predict(rows.inputs, ()))
        if not again.passes(request.tolerance):
            raise OptimizationRefused(
                f"{source.ref} was not optimized: the stored {chosen.converter} model predicts "
                "differently from the one just checked"
            )
        record = lineage_record(
            source.ref, chosen, request.tolerance, len(rows.kinds), source_latency
        )
        lineage = dataclasses.replace(
            source.lineage,
            parent=source.ref,
            optimization=record,
            python_version=platform.python_version(),
            packages=package_versions(),
        )
        speedup = record["speedup"]
        return workspace.store.create_version(
            model=source.model,
            framework=converted.framework,
            artifact=artifact,
            signature=source.signature,
            lineage=lineage,
            metrics=dict(source.metrics),
            params=dict(source.params),
            tags=dict(source.tags),
            description=(
                f"{source.ref} optimized with {chosen.converter} {chosen.converter_version}: "
                f"x{speedup['1']} at batch 1, max error {record['max_error']:.3g}"
            ),
            created_by=actor.actor,
            profile=source.profile,
            card=source.card,
            personal_data=source.personal_data,
            audit=AuditEntry(
                actor.actor,
                "model.optimize",
                "",
                source.model,
                {
                    "source": source.ref,
                    "framework": converted.framework,
                    "artifact": digest,
                    "converter": chosen.converter,
                    "converter_version": chosen.converter_version,
                    "tolerance": request.tolerance,
                    "max_error": record["max_error"],
                    "speedup": speedup,
                },
            ),
        )
    except BaseException:
        if not existed:
            discard_if_unused(folder, digest, workspace.artifacts, workspace.uses_artifact)
        raise


def _stage(folder: Path, converted: Converted) -> Path:
    """Write a conversion's bytes in a folder of its own under the staging folder."""
    place = folder / converted.converter
    place.mkdir(exist_ok=True)
    path = place / converted.filename
    path.write_bytes(converted.payload)
    return path


def _cost(attempt: Attempt) -> float:
    """What auto minimises: the geometric mean of the times at batch 1 (a lone real-time request)
    and at the serving batch (under load), so neither case alone decides."""
    assert attempt.latency is not None
    return math.sqrt(attempt.latency.single_ms * attempt.latency.batch_ms)
