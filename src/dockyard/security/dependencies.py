"""Known vulnerabilities in Python packages: OSV advisory files and pip-audit.

The logic behind ``dockyard deps audit``. An advisory file is OSV JSON (one object, a list of them,
or JSON Lines); only ``PyPI`` entries count, names compare per PEP 503 and versions per PEP 440.
Range semantics follow the OSV spec: events sorted by version, ``introduced`` "0" is the start,
``fixed`` is exclusive, ``last_affected`` inclusive, and a version hit by any range or listed in
``versions`` is affected. A file that cannot be read as such is refused whole, never half-used: a
security check that silently skips what it does not understand reports "clean" when it is not.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from dockyard.errors import InvalidInput

logger = logging.getLogger(__name__)

MAX_ADVISORY_BYTES = 64 * 1024 * 1024
PIP_AUDIT_TIMEOUT_S = 60.0
ECOSYSTEM = "PyPI"
# Ranges whose bounds are package versions; GIT ranges hold commits and say nothing about releases.
VERSION_RANGE_TYPES = frozenset({"ECOSYSTEM", "SEMVER"})
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")
# At one version, open a range before closing it: "introduced X, fixed X" must stay empty.
EVENT_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 2, "limit": 3}
# PEP 508 names: anything else would be read by pip-audit as an option line in the requirements.
PACKAGE_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
SUMMARY_CHARS = 200


@dataclass(frozen=True)
class Finding:
    """One package version that one advisory says is vulnerable."""

    package: str
    version: str
    advisory_id: str
    aliases: tuple[str, ...] = ()
    summary: str = ""
    fixed_versions: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "version": self.version,
            "id": self.advisory_id,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "fixed_versions": list(self.fixed_versions),
        }


@dataclass(frozen=True)
class Event:
    """One range event; ``version`` None is the "0" that comes before every version."""

    kind: str
    version: Version | None
    text: str

    def closes_before(self, version: Version) -> bool:
        """Whether ``version`` is past this end: at/above ``fixed``, above ``last_affected``."""
        if self.version is None:
            return False
        if self.kind == "fixed":
            return version >= self.version
        return self.kind == "last_affected" and version > self.version

    def sort_key(self) -> tuple[bool, Version, int]:
        return (self.version is not None, self.version or Version("0"), EVENT_ORDER[self.kind])


@dataclass(frozen=True)
class VersionRange:
    """An OSV ECOSYSTEM or SEMVER range, its events sorted by version."""

    events: tuple[Event, ...]

    def contains(self, version: Version) -> bool:
        """The OSV evaluation: walk the sorted events, each one at or below ``version`` decides."""
        affected = False
        for event in self.events:
            if event.kind == "introduced" and (event.version is None or version >= event.version):
                affected = True
            elif event.closes_before(version):
                affected = False
        return affected

    def fixes_above(self, version: Version) -> list[str]:
        """The ``fixed`` versions above ``version``: the upgrades that leave this range."""
        return [
            event.text
            for event in self.events
            if event.kind == "fixed" and event.version is not None and event.version > version
        ]


@dataclass(frozen=True)
class AffectedPackage:
    """One ``affected`` entry of a PyPI package: its ranges and explicit versions."""

    name: str
    ranges: tuple[VersionRange, ...]
    versions: frozenset[Version]
    unparsed_versions: frozenset[str]

    def affects(self, version: Version | None, text: str) -> bool:
        """Whether this version is listed or in a range (an unparseable one only by listing)."""
        if text.strip() in self.unparsed_versions:
            return True
        if version is None:
            return False
        return version in self.versions or any(r.contains(version) for r in self.ranges)

    def fixes_above(self, version: Version | None) -> list[str]:
        if version is None:
            return []
        return [fix for r in self.ranges if r.contains(version) for fix in r.fixes_above(version)]


@dataclass(frozen=True)
class Advisory:
    """One OSV entry, reduced to what an audit reports and its PyPI ``affected`` entries."""

    id: str
    summary: str
    aliases: tuple[str, ...]
    affected: tuple[AffectedPackage, ...]


class Advisories:
    """A loaded advisory file, indexed by canonical package name."""

    def __init__(self, entries: Iterable[Advisory], source: str = "") -> None:
        self.entries = tuple(entries)
        self.source = source
        self._by_name: dict[str, list[Advisory]] = {}
        for advisory in self.entries:
            for name in dict.fromkeys(affected.name for affected in advisory.affected):
                self._by_name.setdefault(name, []).append(advisory)

    def __len__(self) -> int:
        return len(self.entries)

    def findings(self, packages: Mapping[str, str]) -> list[Finding]:
        """The vulnerabilities of these installed or recorded ``{package: version}``."""
        findings: list[Finding] = []
        for name, text in sorted(packages.items(), key=lambda item: canonicalize_name(item[0])):
            findings.extend(self._package_findings(name, text))
        return findings

    def _package_findings(self, name: str, text: str) -> list[Finding]:
        canonical = canonicalize_name(name)
        version = parse_version(text)
        findings: list[Finding] = []
        # An advisory already reported under one of its aliases is the same vulnerability.
        reported: set[str] = set()
        for advisory in self._by_name.get(canonical, ()):
            if advisory.id in reported or reported.intersection(advisory.aliases):
                continue
            hits = [
                affected
                for affected in advisory.affected
                if affected.name == canonical and affected.affects(version, text)
            ]
            if not hits:
                continue
            reported.update((advisory.id, *advisory.aliases))
            fixes = {fix for affected in hits for fix in affected.fixes_above(version)}
            findings.append(
                Finding(
                    package=name,
                    version=text,
                    advisory_id=advisory.id,
                    aliases=advisory.aliases,
                    summary=advisory.summary,
                    fixed_versions=tuple(sorted(fixes, key=Version)),
                )
            )
        return findings


def parse_version(text: str) -> Version | None:
    """A PEP 440 version, or None for one that is not (it can only match by exact listing)."""
    try:
        return Version(text)
    except InvalidVersion:
        return None


def load_advisories(path: Path | str) -> Advisories:
    """Read an OSV advisory file; refuse the whole file, naming the problem, if it is not one."""
    path = Path(path)
    text = _decode(path, _read_bounded(path))
    advisories = [
        advisory
        for index, document in enumerate(_documents(path, text))
        if (advisory := _advisory(path, f"entry {index + 1}", document)) is not None
    ]
    return Advisories(advisories, source=str(path))


def environment_packages() -> dict[str, str]:
    """``{name: version}`` of every distribution installed here: the serving environment."""
    found: dict[str, str] = {}
    seen: set[str] = set()
    for distribution in importlib.metadata.distributions():
        # get_all: a distribution with broken metadata may have no Name; skip it, never crash.
        name = (distribution.metadata.get_all("Name") or [""])[0]
        if not name or canonicalize_name(name) in seen:
            # The first one on sys.path is the one imports get; later copies are shadowed.
            continue
        seen.add(canonicalize_name(name))
        found[name] = distribution.version
    return dict(sorted(found.items(), key=lambda item: canonicalize_name(item[0])))


def pip_audit_findings(
    packages: Mapping[str, str], timeout: float = PIP_AUDIT_TIMEOUT_S
) -> list[Finding] | None:
    """What ``pip-audit`` finds for these pinned packages; None when it is absent or cannot answer.

    Pins are audited as given (``--no-deps --disable-pip``): resolving them would install every one
    into a scratch environment. Names and versions that are not PEP 508 / PEP 440 are left out, so
    nothing recorded in a registry can smuggle an option line into the requirements file.
    """
    executable = shutil.which("pip-audit")
    if executable is None:
        return None
    pins = _requirement_lines(packages)
    with tempfile.TemporaryDirectory(prefix="dockyard-audit-") as folder:
        requirements = Path(folder) / "requirements.txt"
        requirements.write_text("".join(pins), encoding="utf-8")
        command = [executable, "-r", str(requirements), "--no-deps", "--disable-pip"]
        command += ["--format", "json", "--progress-spinner", "off"]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            logger.warning("pip-audit gave no answer within %.0f s", timeout)
            return None
        except OSError as exc:
            logger.warning("cannot run pip-audit: %s", exc)
            return None
    return _pip_audit_report(completed, packages)


def pip_audit_targets(
    targets: Mapping[str, Mapping[str, str]], timeout: float = PIP_AUDIT_TIMEOUT_S
) -> dict[str, list[Finding]] | None:
    """pip-audit findings per target, from one run per version of the most varied package.

    A requirements file may pin each package once, so the pins of all targets go into as few
    batches as allow that; each target then gets the findings of its own pins.
    """
    found: dict[tuple[str, Version | str], list[Finding]] = {}
    for batch in _batches(targets.values()):
        findings = pip_audit_findings(batch, timeout)
        if findings is None:
            return None
        for finding in findings:
            found.setdefault(_pin_key(finding.package, finding.version), []).append(finding)
    return {
        label: [
            replace(finding, package=name, version=version)
            for name, version in sorted(packages.items(), key=lambda i: canonicalize_name(i[0]))
            for finding in found.get(_pin_key(name, version), [])
        ]
        for label, packages in targets.items()
    }


def _pin_key(name: str, version: str) -> tuple[str, Version | str]:
    return canonicalize_name(name), parse_version(version) or version.strip()


def _batches(targets: Iterable[Mapping[str, str]]) -> list[dict[str, str]]:
    """Every distinct pin, in batches that hold each package name at most once."""
    batches: list[dict[str, str]] = []
    names: list[set[str]] = []
    seen: set[tuple[str, Version | str]] = set()
    for packages in targets:
        for name, version in packages.items():
            key = _pin_key(name, version)
            if key in seen:
                continue
            seen.add(key)
            index = next((i for i, held in enumerate(names) if key[0] not in held), len(batches))
            if index == len(batches):
                batches.append({})
                names.append(set())
            batches[index][name] = version
            names[index].add(key[0])
    return batches


def _requirement_lines(packages: Mapping[str, str]) -> list[str]:
    lines = []
    for name, text in packages.items():
        version = parse_version(text)
        if version is None or not PACKAGE_NAME.match(name):
            logger.info("pip-audit skips %r %r: not a PEP 508 name and PEP 440 version", name, text)
            continue
        lines.append(f"{name}=={version}\n")
    return lines


def _pip_audit_report(
    completed: subprocess.CompletedProcess[str], packages: Mapping[str, str]
) -> list[Finding] | None:
    """Findings from pip-audit's JSON (it exits 1 when it finds some); None when there is none."""
    try:
        report = json.loads(completed.stdout)
    except ValueError:
        last = (completed.stderr or "").strip().splitlines()[-1:] or ["no output"]
        logger.warning("pip-audit failed (exit %s): %s", completed.returncode, last[0])
        return None
    dependencies = report.get("dependencies") if isinstance(report, dict) else report
    if not isinstance(dependencies, list):
        logger.warning("pip-audit printed JSON without a list of dependencies")
        return None
    names: dict[str, str] = {canonicalize_name(name): name for name in packages}
    findings: list[Finding] = []
    for dependency in dependencies:
        if isinstance(dependency, dict):
            findings.extend(_pip_audit_dependency(dependency, names))
    return findings


def _pip_audit_dependency(dependency: Mapping[str, Any], names: Mapping[str, str]) -> list[Finding]:
    name = str(dependency.get("name", ""))
    version = str(dependency.get("version", ""))
    vulns = dependency.get("vulns")
    return [
        Finding(
            package=names.get(canonicalize_name(name), name),
            version=version,
            advisory_id=str(vuln.get("id", "")),
            aliases=tuple(str(alias) for alias in vuln.get("aliases") or ()),
            summary=_first_line(str(vuln.get("description") or "")),
            fixed_versions=tuple(str(fix) for fix in vuln.get("fix_versions") or ()),
        )
        for vuln in (vulns if isinstance(vulns, list) else [])
        if isinstance(vuln, dict)
    ]


# Reading the file.


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, refusing one over the limit before reading it (and if it grows)."""
    limit = MAX_ADVISORY_BYTES
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limit:
                raise InvalidInput(_too_large(path, size, limit))
            data = handle.read(limit + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read advisory file {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise InvalidInput(_too_large(path, len(data), limit))
    return data


def _too_large(path: Path, size: int, limit: int) -> str:
    return (
        f"advisory file {path} is too large: {size} bytes, over the limit of {_size(limit)}; "
        "keep only the PyPI advisories you need"
    )


def _size(count: int) -> str:
    mib = 1024 * 1024
    return f"{count // mib} MiB" if count % mib == 0 else f"{count} bytes"


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"advisory file {path} is not UTF-8 text (byte {exc.start}); expected OSV JSON"
        ) from exc


def _documents(path: Path, text: str) -> list[Any]:
    """The OSV objects in the file: one object, a JSON list of them, or JSON Lines."""
    if not text.strip():
        raise InvalidInput(f"advisory file {path} is empty; expected OSV JSON")
    try:
        whole = _json(text)
    except ValueError as exc:
        return _json_lines(path, text, exc)
    if isinstance(whole, list):
        return whole
    if isinstance(whole, dict):
        return [whole]
    raise InvalidInput(
        f"advisory file {path} holds {_kind(whole)}; "
        "expected an OSV object, a list of them, or one per line"
    )


def _json_lines(path: Path, text: str, whole_error: ValueError) -> list[Any]:
    """JSON Lines; when even the first line is not JSON, the file was meant as one document."""
    documents: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            documents.append(_json(line))
        except ValueError as exc:
            problem = whole_error if not documents else exc
            where = "" if not documents else f" line {number}:"
            raise InvalidInput(
                f"advisory file {path} is not valid JSON:{where} {_json_problem(problem)}"
            ) from exc
    return documents


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("it nests too deeply") from None


def _json_problem(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return str(exc)


# Checking the shape of each entry.


def _advisory(path: Path, where: str, document: Any) -> Advisory | None:
    entry = _object(path, where, document)
    advisory_id = _string(path, where, entry, "id")
    if not advisory_id.strip():
        raise InvalidInput(f"advisory file {path}: {where}: 'id' is empty")
    where = f"{where} ({advisory_id})"
    summary = _optional_string(path, where, entry, "summary")
    details = _optional_string(path, where, entry, "details")
    aliases = _strings(path, where, entry, "aliases")
    affected = [
        package
        for index, item in enumerate(_array(path, where, entry, "affected"))
        if (package := _affected(path, f"{where} affected[{index}]", item)) is not None
    ]
    if entry.get("withdrawn"):
        return None
    return Advisory(
        id=advisory_id,
        summary=_first_line(summary or details),
        aliases=tuple(aliases),
        affected=tuple(affected),
    )


def _affected(path: Path, where: str, item: Any) -> AffectedPackage | None:
    affected = _object(path, where, item)
    if affected.get("package") is None:
        return None  # a package-less entry describes GIT ranges of a repository
    package = _object(path, f"{where}.package", affected["package"])
    ecosystem = _string(path, f"{where}.package", package, "ecosystem")
    name = _string(path, f"{where}.package", package, "name")
    ranges = [
        version_range
        for index, item in enumerate(_array(path, where, affected, "ranges"))
        if (version_range := _range(path, f"{where}.ranges[{index}]", item, ecosystem)) is not None
    ]
    listed = _strings(path, where, affected, "versions")
    if ecosystem != ECOSYSTEM:
        return None
    parsed = {text: parse_version(text) for text in listed}
    return AffectedPackage(
        name=canonicalize_name(name),
        ranges=tuple(ranges),
        versions=frozenset(version for version in parsed.values() if version is not None),
        unparsed_versions=frozenset(text.strip() for text, v in parsed.items() if v is None),
    )


def _range(path: Path, where: str, item: Any, ecosystem: str) -> VersionRange | None:
    entry = _object(path, where, item)
    kind = _string(path, where, entry, "type")
    events = [
        _event(path, f"{where}.events[{index}]", event)
        for index, event in enumerate(_array(path, where, entry, "events", required=True))
    ]
    if kind not in VERSION_RANGE_TYPES or ecosystem != ECOSYSTEM:
        return None
    if not any(event_kind == "introduced" for event_kind, _ in events):
        raise InvalidInput(f"advisory file {path}: {where} has no 'introduced' event")
    parsed = [
        _bound(path, where, event_kind, text)
        for event_kind, text in events
        if event_kind != "limit"
    ]
    return VersionRange(events=tuple(sorted(parsed, key=Event.sort_key)))


def _event(path: Path, where: str, item: Any) -> tuple[str, str]:
    event = _object(path, where, item)
    kinds = [kind for kind in EVENT_KINDS if kind in event]
    if len(kinds) != 1:
        raise InvalidInput(
            f"advisory file {path}: {where} must have exactly one of {', '.join(EVENT_KINDS)}"
        )
    return kinds[0], _string(path, where, event, kinds[0])


def _bound(path: Path, where: str, kind: str, text: str) -> Event:
    if kind == "introduced" and text.strip() == "0":
        return Event(kind, None, text)
    version = parse_version(text)
    if version is None:
        # Refused rather than skipped: a range nobody can evaluate would read as "not affected".
        raise InvalidInput(
            f"advisory file {path}: {where}: {kind} {text!r} is not a PEP 440 version"
        )
    return Event(kind, version, text)


def _object(path: Path, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"advisory file {path}: {where} must be an object, not {_kind(value)}")
    return value


def _string(path: Path, where: str, entry: Mapping[str, Any], key: str) -> str:
    if key not in entry:
        raise InvalidInput(f"advisory file {path}: {where}: '{key}' is missing")
    value = entry[key]
    if not isinstance(value, str):
        raise InvalidInput(
            f"advisory file {path}: {where}: '{key}' must be a string, not {_kind(value)}"
        )
    return value


def _optional_string(path: Path, where: str, entry: Mapping[str, Any], key: str) -> str:
    return "" if entry.get(key) is None else _string(path, where, entry, key)


def _array(
    path: Path, where: str, entry: Mapping[str, Any], key: str, required: bool = False
) -> list[Any]:
    if key not in entry and required:
        raise InvalidInput(f"advisory file {path}: {where}: '{key}' is missing")
    value = entry.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InvalidInput(
            f"advisory file {path}: {where}: '{key}' must be a list, not {_kind(value)}"
        )
    return value


def _strings(path: Path, where: str, entry: Mapping[str, Any], key: str) -> list[str]:
    values = _array(path, where, entry, key)
    if not all(isinstance(value, str) for value in values):
        raise InvalidInput(f"advisory file {path}: {where}: '{key}' must be a list of strings")
    return values


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def _first_line(text: str) -> str:
    line = text.strip().split("\n", 1)[0].strip()
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "…"
