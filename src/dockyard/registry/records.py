"""What the registry stores, as frozen dataclasses that every layer above can pass around."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output: V2 datatype, shape (-1 = any; the first dim is the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    categorical: bool = False
    allow_nan: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
            "categorical": self.categorical,
            "allow_nan": self.allow_nan,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=tuple(int(d) for d in data["shape"]),
            categorical=bool(data.get("categorical", False)),
            allow_nan=bool(data.get("allow_nan", False)),
        )


@dataclass(frozen=True)
class Signature:
    """The inputs a version accepts and the outputs it produces.

    ``tabular``: the inputs are feature columns (each of shape ``(-1,)``) and the model takes a
    table (a 2-D array, or a DataFrame when a column is categorical); a request may send one
    ``[N, F]`` tensor or one tensor per feature. Otherwise it takes named tensors as they are.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    tabular: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "tabular": self.tabular,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(item) for item in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(item) for item in data["outputs"]),
            tabular=bool(data["tabular"]),
        )


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: its reference data's fingerprint and the code and environment."""

    data_sha256: str | None
    data_rows: int | None
    data_schema: Mapping[str, str]
    git_commit: str | None
    python_version: str
    packages: Mapping[str, str]
    parent: str | None = None
    """The version this one was retrained from (``fraud:3``), if it was."""
    optimization: Mapping[str, Any] | None = None
    """For a version ``dockyard optimize`` made: its source, the converter and its version, the
    tolerance, the measured error and speed-up (``dockyard.optimize.report``); else None."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "data_sha256": self.data_sha256,
            "data_rows": self.data_rows,
            "data_schema": dict(self.data_schema),
            "git_commit": self.git_commit,
            "python_version": self.python_version,
            "packages": dict(self.packages),
            "parent": self.parent,
        }
        # Only an optimized version has the key: every other version's lineage reads as before.
        if self.optimization is not None:
            data["optimization"] = dict(self.optimization)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Lineage:
        return cls(
            data_sha256=data.get("data_sha256"),
            data_rows=data.get("data_rows"),
            data_schema=dict(data.get("data_schema") or {}),
            git_commit=data.get("git_commit"),
            python_version=str(data.get("python_version", "")),
            packages=dict(data.get("packages") or {}),
            parent=data.get("parent"),
            optimization=data.get("optimization"),
        )


@dataclass(frozen=True)
class ArtifactRef:
    """How to load a stored artifact: its digest, file format and the runtime's options."""

    digest: str
    format: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelVersion:
    """One registered, immutable version of a model."""

    model: str
    version: int
    framework: str
    artifact: ArtifactRef
    signature: Signature
    lineage: Lineage
    allow_pickle: bool = False
    trusted_types: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    created_by: str = ""
    created_at: datetime | None = None
    archived: bool = False
    aliases: tuple[str, ...] = ()
    profile: Mapping[str, Any] | None = None
    """The reference profile captured at registration (``dockyard.monitoring.profile``); None
    for a version registered without reference data or before profiles existed."""
    card: Mapping[str, Any] | None = None
    """The model card (``dockyard.governance.cards``); None until one is set."""
    personal_data: Mapping[str, Any] | None = None
    """Columns that looked personal at registration: column → what it looked like (``email``,
    ``phone``, ...; ``dockyard.governance.privacy``); None when none was checked."""

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data, as ``models show --json`` and ``GET /api/models/…`` give it."""
        return {
            "model": self.model,
            "version": self.version,
            "framework": self.framework,
            "artifact": {
                "sha256": self.artifact.digest,
                "format": self.artifact.format,
                "options": dict(self.artifact.options),
            },
            "signature": self.signature.to_dict(),
            "lineage": self.lineage.to_dict(),
            "allow_pickle": self.allow_pickle,
            "trusted_types": list(self.trusted_types),
            "metrics": dict(self.metrics),
            "params": dict(self.params),
            "tags": dict(self.tags),
            "description": self.description,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "archived": self.archived,
            "aliases": list(self.aliases),
            "profile": self.profile,
            "card": self.card,
            "personal_data": self.personal_data,
        }


@dataclass(frozen=True)
class Model:
    """A named model: its versions are numbered 1, 2, … and aliases point at them."""

    name: str
    description: str
    created_at: datetime | None
    latest_version: int | None
    aliases: Mapping[str, int] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "latest_version": self.latest_version,
            "aliases": dict(self.aliases),
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class Rollout:
    """A candidate version served beside the stable one its model's ``alias`` pointed at when the
    rollout started: ``canary`` sends ``percent`` of the requests without a version to the
    candidate (the same arm for one value of the request field ``sticky``, when set); ``shadow``
    also sends every such request to the candidate, compares, and answers with the stable's
    outputs only. ``state`` is ``active`` until ``promoted``, ``aborted`` or ``rolled_back``."""

    id: int
    model: str
    alias: str
    stable: int
    candidate: int
    mode: str
    percent: int
    state: str
    started_by: str
    started_at: datetime
    sticky: str | None = None
    ended_by: str | None = None
    ended_at: datetime | None = None
    reason: str | None = None

    @property
    def target(self) -> str:
        """The audit target of the rollout: ``rollout:7``."""
        return f"rollout:{self.id}"

    @property
    def is_active(self) -> bool:
        return self.state == "active"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "alias": self.alias,
            "stable": self.stable,
            "candidate": self.candidate,
            "mode": self.mode,
            "percent": self.percent,
            "sticky": self.sticky,
            "state": self.state,
            "started_by": self.started_by,
            "started_at": self.started_at.isoformat(),
            "ended_by": self.ended_by,
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "reason": self.reason,
        }
