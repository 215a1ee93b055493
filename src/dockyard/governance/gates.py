"""The policy's gates: what a version must show before a protected alias points at it. Each gate
gives a result with a reason a reviewer can act on; ``dockyard policy check`` shows them all, and
a promotion is requested and approved only while every one passes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from dockyard.config import Settings
from dockyard.errors import ArtifactCorrupt, DockyardError, NotFound
from dockyard.governance.cards import missing_fields
from dockyard.governance.challenger import at_least_as_good, main_metric, newest_evaluation
from dockyard.governance.policy import Policy
from dockyard.governance.privacy import column_rules
from dockyard.registry.artifacts import MISSING, ArtifactStore
from dockyard.registry.records import ModelVersion, Signature, TensorSpec
from dockyard.registry.refs import ModelRef
from dockyard.registry.store import RegistryStore

NOT_REQUIRED = "not required by the policy"


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class Evidence:
    """What the gates read besides the version: the registry, the artifacts on disk, the
    settings (personal-data rules), and the signature check, handed down by the services since it
    needs the home's trusted keys (it raises, Forbidden, with the reason a version is not
    validly signed)."""

    settings: Settings
    store: RegistryStore
    artifacts: ArtifactStore
    check_signed: Callable[[ModelVersion], object]


@dataclass(frozen=True)
class PolicyCheck:
    """Every gate's result for pointing ``alias`` at ``version``; ``current`` is the version
    the alias points at now (None: not set)."""

    version: ModelVersion
    alias: str
    current: ModelVersion | None
    gates: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def failed(self) -> list[GateResult]:
        return [gate for gate in self.gates if not gate.passed]

    def refusal(self) -> str:
        """The failing gates in one line: ``gate 'card' failed (...); gate ...``."""
        return "; ".join(f"gate {gate.name!r} failed ({gate.detail})" for gate in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.version.model,
            "version": self.version.version,
            "alias": self.alias,
            "current_version": None if self.current is None else self.current.version,
            "passed": self.passed,
            "gates": [gate.to_dict() for gate in self.gates],
        }


def check_gates(
    policy: Policy, evidence: Evidence, version: ModelVersion, alias: str
) -> PolicyCheck:
    """Evaluate every gate of ``policy`` for pointing ``alias`` at ``version``, in a fixed order:
    card, metric gates, challenger, framework, format, signature, artifact, signed, personal
    data. A gate the policy leaves off passes, saying so."""
    try:
        current: ModelVersion | None = evidence.store.resolve(ModelRef(version.model, alias=alias))
    except NotFound:
        current = None
    gates = (
        _card(policy, version),
        *_metrics(policy, version),
        _challenger(policy, evidence, version, current, alias),
        _allowed("framework", version.framework, policy.allowed_frameworks),
        _allowed("format", version.artifact.format, policy.allowed_formats),
        _signature(version, current, alias),
        _artifact(evidence, version),
        _signed(policy, evidence, version),
        _personal_data(evidence, version),
    )
    return PolicyCheck(version, alias, current, gates)


def _card(policy: Policy, version: ModelVersion) -> GateResult:
    if not policy.required_card_fields:
        return GateResult("card", True, "no card field required by the policy")
    missing = missing_fields(version.card, policy.required_card_fields)
    if missing:
        return GateResult(
            "card",
            False,
            f"the model card of {version.ref} lacks {', '.join(missing)}: set them with "
            f"`dockyard models card {version.ref} --field {missing[0]}=...` (PUT "
            f"/api/models/{version.model}/versions/{version.version}/card)",
        )
    return GateResult("card", True, f"has {', '.join(policy.required_card_fields)}")


def _metrics(policy: Policy, version: ModelVersion) -> Iterator[GateResult]:
    for gate in policy.metric_gates:
        name = f"metric {gate}"
        value = version.metrics.get(gate.metric)
        if value is None:
            recorded = ", ".join(sorted(version.metrics)) or "none"
            yield GateResult(
                name,
                False,
                f"{version.ref} has no recorded {gate.metric!r} (recorded: {recorded}); "
                "register it with --metric",
            )
        else:
            yield GateResult(name, gate.holds(value), f"{gate.metric} is {value:.6g}")


def _challenger(
    policy: Policy,
    evidence: Evidence,
    version: ModelVersion,
    current: ModelVersion | None,
    alias: str,
) -> GateResult:
    name = "challenger"
    if not policy.challenger_beats_champion:
        return GateResult(name, True, NOT_REQUIRED)
    if current is None:
        return GateResult(name, True, f"no version under @{alias} yet: no champion to beat")
    if current.version == version.version:
        return GateResult(name, True, f"{version.ref} is the champion already")
    engine = evidence.store.engine
    challenger, champion = newest_evaluation(engine, version), newest_evaluation(engine, current)
    if challenger is None or champion is None:
        unevaluated = version if challenger is None else current
        return GateResult(
            name,
            False,
            f"{unevaluated.ref} has no evaluation on labelled traffic: send labels (dockyard "
            "monitor feedback) and evaluate it (dockyard monitor evaluate), or retrain",
        )
    metric = main_metric(challenger, champion)
    if metric is None:
        return GateResult(
            name,
            False,
            f"{version.ref} and {current.ref} share no evaluated metric to compare "
            f"({', '.join(sorted(challenger.metrics))} vs {', '.join(sorted(champion.metrics))})",
        )
    mine, theirs = challenger.metrics[metric], champion.metrics[metric]
    passed = at_least_as_good(metric, mine, theirs)
    verdict = "at least as good as" if passed else "worse than"
    return GateResult(
        name,
        passed,
        f"{metric} {mine:.6g} on {challenger.rows} rows ({challenger.window}), {verdict} "
        f"{current.ref} (@{alias}): {theirs:.6g} on {champion.rows} rows ({champion.window})",
    )


def _allowed(name: str, value: str, allowed: tuple[str, ...]) -> GateResult:
    if not allowed:
        return GateResult(name, True, f"{value} (any {name} allowed)")
    if value in allowed:
        return GateResult(name, True, f"{value} is allowed")
    return GateResult(name, False, f"{value} is not allowed; allowed: {', '.join(allowed)}")


def _signature(version: ModelVersion, current: ModelVersion | None, alias: str) -> GateResult:
    if current is None:
        return GateResult("signature", True, f"no version under @{alias} yet")
    changes = signature_changes(current.signature, version.signature)
    if changes:
        return GateResult(
            "signature",
            False,
            f"incompatible with {current.ref} (@{alias}): {'; '.join(changes)}",
        )
    return GateResult("signature", True, f"compatible with {current.ref} (@{alias})")


def signature_changes(current: Signature, candidate: Signature) -> list[str]:
    """How ``candidate`` breaks the clients of ``current``: a request ``current`` accepts that
    ``candidate`` refuses or reads differently, an output they read that changes. Empty when it
    is compatible (new outputs, NaN newly allowed and the like are)."""
    found = []
    if current.tabular != candidate.tabular:
        kinds = {True: "tabular", False: "tensor"}
        found.append(f"inputs change from {kinds[current.tabular]} to {kinds[candidate.tabular]}")
    before = {spec.name: spec for spec in current.inputs}
    after = {spec.name: spec for spec in candidate.inputs}
    found += [f"input {name!r} removed" for name in before if name not in after]
    found += [
        f"new input {name!r} (today's requests lack it)" for name in after.keys() - before.keys()
    ]
    for name in before.keys() & after.keys():
        found += _spec_changes("input", before[name], after[name])
        if before[name].allow_nan and not after[name].allow_nan:
            found.append(f"input {name!r} no longer accepts NaN")
    outputs = {spec.name: spec for spec in candidate.outputs}
    for spec in current.outputs:
        if spec.name not in outputs:
            found.append(f"output {spec.name!r} removed")
        else:
            found += _spec_changes("output", spec, outputs[spec.name])
    return sorted(found)


def _spec_changes(role: str, before: TensorSpec, after: TensorSpec) -> list[str]:
    found = []
    if before.datatype != after.datatype:
        found.append(f"{role} {before.name!r} {before.datatype} → {after.datatype}")
    if before.shape != after.shape:
        found.append(f"{role} {before.name!r} shape {list(before.shape)} → {list(after.shape)}")
    if before.categorical != after.categorical:
        kind = "categorical" if after.categorical else "numeric"
        found.append(f"{role} {before.name!r} becomes {kind}")
    return found


def _artifact(evidence: Evidence, version: ModelVersion) -> GateResult:
    digest = version.artifact.digest
    try:
        evidence.artifacts.verified_path(digest)
    except ArtifactCorrupt as exc:
        found = "missing" if exc.actual == MISSING else f"sha256 {exc.actual}"
        return GateResult(
            "artifact",
            False,
            f"the stored artifact of {version.ref} is {found}, not sha256 {digest}: restore it "
            "from a backup or register the model again",
        )
    return GateResult("artifact", True, f"sha256 {digest} re-checked")


def _signed(policy: Policy, evidence: Evidence, version: ModelVersion) -> GateResult:
    if not policy.require_signature:
        return GateResult("signed", True, NOT_REQUIRED)
    try:
        evidence.check_signed(version)
    except DockyardError as exc:
        return GateResult("signed", False, f"{exc.message}; sign it with dockyard models sign")
    return GateResult("signed", True, f"{version.ref} is signed by a trusted key")


def _personal_data(evidence: Evidence, version: ModelVersion) -> GateResult:
    flagged = version.personal_data or {}
    if not flagged:
        return GateResult("personal_data", True, "no column flagged as personal at registration")
    rules = column_rules(evidence.settings, version.model)
    missing = [f"{column} ({flagged[column]})" for column in flagged if column not in rules]
    if missing:
        return GateResult(
            "personal_data",
            False,
            f"columns flagged as personal have no rule: {', '.join(missing)}; give each one "
            f"(drop, mask, hash, generalize or keep) under [governance] personal_data",
        )
    return GateResult("personal_data", True, f"every flagged column has a rule: {len(flagged)}")
