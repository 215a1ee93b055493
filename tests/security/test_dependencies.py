"""OSV advisory files: range semantics, name normalisation, refusing bad files, and pip-audit."""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dockyard.errors import InvalidInput
from dockyard.security import dependencies
from dockyard.security.dependencies import (
    Advisories,
    environment_packages,
    load_advisories,
    pip_audit_findings,
    pip_audit_targets,
)


def _entry(
    advisory_id: str = "PYSEC-TEST-1",
    name: str = "scikit-learn",
    events: list[dict[str, str]] | None = None,
    versions: list[str] | None = None,
    ecosystem: str = "PyPI",
    range_type: str = "ECOSYSTEM",
    **extra: Any,
) -> dict[str, Any]:
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if events is not None:
        affected["ranges"] = [{"type": range_type, "events": events}]
    if versions is not None:
        affected["versions"] = versions
    return {"id": advisory_id, "summary": "a test advisory", "affected": [affected], **extra}


def _write(path: Path, entries: Any) -> Path:
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def _load(tmp_path: Path, *entries: dict[str, Any]) -> Advisories:
    return load_advisories(_write(tmp_path / "advisories.json", list(entries)))


def _affected(advisories: Advisories, version: str, name: str = "scikit-learn") -> bool:
    return bool(advisories.findings({name: version}))


INTRODUCED_FIXED = [{"introduced": "1.0"}, {"fixed": "1.2"}]
FROM_START = [{"introduced": "0"}, {"fixed": "1.2"}]
LAST_AFFECTED = [{"introduced": "1.0"}, {"last_affected": "1.2"}]
# Two intervals in one range, events deliberately out of order: [1.0, 1.5) and [2.0, 2.5).
UNSORTED = [{"fixed": "2.5"}, {"introduced": "2.0"}, {"fixed": "1.5"}, {"introduced": "1.0"}]


@pytest.mark.parametrize(
    ("events", "version", "affected"),
    [
        (INTRODUCED_FIXED, "0.9", False),
        (INTRODUCED_FIXED, "1.0", True),
        (INTRODUCED_FIXED, "1.1.9", True),
        (INTRODUCED_FIXED, "1.2", False),
        (INTRODUCED_FIXED, "1.2.0", False),
        (INTRODUCED_FIXED, "1.2rc1", True),
        (FROM_START, "0.0.1", True),
        (FROM_START, "0.1.dev0", True),
        (FROM_START, "1.3", False),
        (LAST_AFFECTED, "1.2", True),
        (LAST_AFFECTED, "1.2.0", True),
        (LAST_AFFECTED, "1.2.post1", False),
        (LAST_AFFECTED, "1.3", False),
        (UNSORTED, "1.2", True),
        (UNSORTED, "1.5", False),
        (UNSORTED, "1.9", False),
        (UNSORTED, "2.0", True),
        (UNSORTED, "2.5", False),
        ([{"introduced": "2.0"}], "99", True),
        ([{"introduced": "2.0"}], "1.9", False),
        ([{"introduced": "1.0"}, {"fixed": "1.0"}], "1.0", False),
    ],
)
def test_range_semantics(
    tmp_path: Path, events: list[dict[str, str]], version: str, affected: bool
) -> None:
    advisories = _load(tmp_path, _entry(events=events))
    assert _affected(advisories, version) is affected


def test_semver_ranges_count_like_ecosystem_ones(tmp_path: Path) -> None:
    advisories = _load(tmp_path, _entry(events=INTRODUCED_FIXED, range_type="SEMVER"))
    assert _affected(advisories, "1.1.0")
    assert not _affected(advisories, "1.2.0")


def test_any_of_several_ranges_is_enough(tmp_path: Path) -> None:
    entry = _entry(events=[{"introduced": "1.0"}, {"fixed": "1.1"}])
    entry["affected"][0]["ranges"].append({"type": "ECOSYSTEM", "events": [{"introduced": "3.0"}]})
    advisories = _load(tmp_path, entry)
    assert [_affected(advisories, v) for v in ("1.0.5", "2.0", "3.1")] == [True, False, True]


def test_explicit_versions_match_by_pep440_equality(tmp_path: Path) -> None:
    advisories = _load(tmp_path, _entry(versions=["1.0", "1.1", "not-a-version"]))
    assert _affected(advisories, "1.0.0")
    assert _affected(advisories, "1.1")
    assert not _affected(advisories, "1.0.1")
    # A version PEP 440 cannot read can only match when it is listed as written.
    assert _affected(advisories, "not-a-version")
    assert not _affected(advisories, "also-not-a-version")


def test_only_pypi_and_version_ranges_count(tmp_path: Path) -> None:
    npm = _entry("NPM-1", events=FROM_START, ecosystem="npm")
    git = _entry("GIT-1", events=[{"introduced": "0"}, {"fixed": "abc123"}], range_type="GIT")
    advisories = _load(tmp_path, npm, git)
    assert advisories.findings({"scikit-learn": "1.0"}) == []


@pytest.mark.parametrize(
    ("advised", "installed"), [("Scikit_Learn", "scikit-learn"), ("scikit-learn", "SCIKIT.learn")]
)
def test_names_are_compared_per_pep503(tmp_path: Path, advised: str, installed: str) -> None:
    advisories = _load(tmp_path, _entry(name=advised, events=FROM_START))
    findings = advisories.findings({installed: "1.0", "scikit-learn-extra": "1.0"})
    # The finding names the package as the caller spelt it.
    assert [(f.package, f.version, f.advisory_id) for f in findings] == [
        (installed, "1.0", "PYSEC-TEST-1")
    ]


def test_a_finding_names_the_fixes_above_the_version(tmp_path: Path) -> None:
    entry = _entry(events=UNSORTED, aliases=["CVE-2099-1"], details="first line\nmore")
    del entry["summary"]
    (finding,) = _load(tmp_path, entry).findings({"scikit-learn": "2.1"})
    assert finding.fixed_versions == ("2.5",)
    assert finding.aliases == ("CVE-2099-1",)
    assert finding.summary == "first line"
    assert finding.to_dict()["id"] == "PYSEC-TEST-1"


def test_withdrawn_and_aliased_duplicates_are_not_reported(tmp_path: Path) -> None:
    withdrawn = _entry("PYSEC-W", events=FROM_START, withdrawn="2024-01-01T00:00:00Z")
    first = _entry("PYSEC-1", events=FROM_START, aliases=["GHSA-1"])
    same = _entry("GHSA-1", events=FROM_START, aliases=["PYSEC-1"])
    findings = _load(tmp_path, withdrawn, first, same).findings({"scikit-learn": "1.0"})
    assert [f.advisory_id for f in findings] == ["PYSEC-1"]


@pytest.mark.parametrize("layout", ["object", "list", "lines", "bom"])
def test_the_three_file_layouts(tmp_path: Path, layout: str) -> None:
    entries = [_entry("A-1", events=FROM_START), _entry("A-2", name="numpy", versions=["1.0"])]
    path = tmp_path / "advisories.json"
    if layout == "object":
        path.write_text(json.dumps(entries[0], indent=2))
        entries = entries[:1]
    elif layout == "list":
        path.write_text(json.dumps(entries, indent=2))
    elif layout == "lines":
        path.write_text("\n".join(json.dumps(e) for e in entries) + "\n\n")
    else:
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps(entries).encode())
    advisories = load_advisories(path)
    assert len(advisories) == len(entries)
    found = advisories.findings({"scikit-learn": "1.0", "numpy": "1.0"})
    assert sorted(f.advisory_id for f in found) == sorted(e["id"] for e in entries)


BAD_FILES: dict[str, tuple[str | bytes, str]] = {
    "empty": ("  \n", "is empty"),
    "not-json": ('{"id": "X", ', "is not valid JSON: Expecting"),
    "bad-line": ('{"id": "A"}\n{"id": \n', "is not valid JSON: line 2:"),
    "not-utf8": (b'{"id": "\xff"}', "is not UTF-8"),
    "deep": ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    "scalar": ('"hello"', "holds a string; expected an OSV object"),
    "entry-not-object": ('[{"id": "A"}, 3]', "entry 2 must be an object, not a number"),
    "no-id": ('[{"summary": "x"}]', "entry 1: 'id' is missing"),
    "id-not-string": ('{"id": 7}', "entry 1: 'id' must be a string, not a number"),
    "affected-not-list": ('{"id": "A", "affected": {}}', "'affected' must be a list"),
    "no-package-name": (
        '{"id": "A", "affected": [{"package": {"ecosystem": "PyPI"}}]}',
        "entry 1 (A) affected[0].package: 'name' is missing",
    ),
    "aliases-not-strings": ('{"id": "A", "aliases": [1]}', "'aliases' must be a list of strings"),
    "no-events": (
        '{"id": "A", "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},'
        ' "ranges": [{"type": "ECOSYSTEM"}]}]}',
        "ranges[0]: 'events' is missing",
    ),
    "two-keys-event": (
        '{"id": "A", "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},'
        ' "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0", "fixed": "1"}]}]}]}',
        "events[0] must have exactly one of",
    ),
    "no-introduced": (
        '{"id": "A", "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},'
        ' "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "1"}]}]}]}',
        "has no 'introduced' event",
    ),
    "bad-version": (
        '{"id": "A", "affected": [{"package": {"ecosystem": "PyPI", "name": "x"},'
        ' "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "banana"}]}]}]}',
        "introduced 'banana' is not a PEP 440 version",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_naming_file_and_problem(tmp_path: Path, case: str) -> None:
    content, problem = BAD_FILES[case]
    path = tmp_path / f"{case}.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInput) as caught:
        load_advisories(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read advisory file .*missing.json"):
        load_advisories(tmp_path / "missing.json")


def test_a_file_over_64_mib_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:  # sparse: takes no disk space
        handle.truncate(64 * 1024 * 1024 + 1)
    with pytest.raises(InvalidInput, match=r"huge.json is too large: .*limit of 64 MiB"):
        load_advisories(path)


def test_the_limit_also_bounds_what_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dependencies, "MAX_ADVISORY_BYTES", 10)
    path = _write(tmp_path / "small.json", [])
    assert len(load_advisories(path)) == 0
    path.write_text(json.dumps([_entry()]))
    with pytest.raises(InvalidInput, match="too large: .* limit of 10 bytes"):
        load_advisories(path)


def test_environment_packages_are_the_installed_distributions() -> None:
    packages = environment_packages()
    assert packages["scikit-learn"] == importlib.metadata.version("scikit-learn")
    assert packages["numpy"] == importlib.metadata.version("numpy")


# pip-audit: never installed here and never reachable, so a stand-in plays it on PATH.

FAKE_PIP_AUDIT = """\
import json, os, pathlib, sys, time
pins = pathlib.Path(sys.argv[sys.argv.index("-r") + 1]).read_text().split()
with open(os.environ["FAKE_AUDIT_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "pins": pins}) + "\\n")
mode = os.environ.get("FAKE_AUDIT_MODE", "report")
if mode == "offline":
    print("ConnectionError: HTTPSConnectionPool(host='pypi.org'): unreachable", file=sys.stderr)
    sys.exit(1)
if mode == "slow":
    time.sleep(30)
deps = []
for pin in pins:
    name, version = pin.split("==")
    bad = name.lower() == "numpy" and version == "1.0"
    vulns = [{"id": "PYSEC-1", "fix_versions": ["1.5"], "aliases": ["CVE-1"],
              "description": "Bad numpy.\\nDetails."}] if bad else []
    deps.append({"name": name.lower(), "version": version, "vulns": vulns})
print(json.dumps({"dependencies": deps, "fixes": []}))
sys.exit(1 if any(d["vulns"] for d in deps) else 0)
"""


@pytest.fixture
def fake_pip_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[dict[str, Any]]]:
    """A ``pip-audit`` on an otherwise empty PATH; returns a reader of the calls it got."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "pip-audit"
    script.write_text(f"#!{sys.executable}\n{FAKE_PIP_AUDIT}")
    script.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.touch()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("FAKE_AUDIT_LOG", str(log))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()]


def test_pip_audit_absent_gives_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert pip_audit_findings({"numpy": "1.0"}) is None


def test_pip_audit_findings_are_read_from_its_json(
    fake_pip_audit: Callable[[], list[dict[str, Any]]],
) -> None:
    packages = {"NumPy": "1.0", "scikit-learn": "1.4", "bad name": "1.0", "odd": "not-pep440"}
    (finding,) = pip_audit_findings(packages) or []
    assert (finding.package, finding.version, finding.advisory_id) == ("NumPy", "1.0", "PYSEC-1")
    assert finding.fixed_versions == ("1.5",)
    assert finding.summary == "Bad numpy."
    (call,) = fake_pip_audit()
    # Only valid pins reach the requirements file, audited as pinned, without resolving.
    assert call["pins"] == ["NumPy==1.0", "scikit-learn==1.4"]
    assert {"--no-deps", "--disable-pip", "--format", "json"} <= set(call["argv"])


@pytest.mark.parametrize(("mode", "timeout"), [("offline", 60.0), ("slow", 0.5)])
def test_pip_audit_that_cannot_answer_gives_none(
    fake_pip_audit: Callable[[], list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    timeout: float,
) -> None:
    monkeypatch.setenv("FAKE_AUDIT_MODE", mode)
    assert pip_audit_findings({"numpy": "1.0"}, timeout=timeout) is None


def test_pip_audit_targets_pin_each_name_once_per_run(
    fake_pip_audit: Callable[[], list[dict[str, Any]]],
) -> None:
    targets: Mapping[str, Mapping[str, str]] = {
        "environment": {"numpy": "1.1", "scikit-learn": "1.4"},
        "a:1": {"numpy": "1.0", "scikit-learn": "1.4"},
        "b:1": {"NumPy": "1.0.0"},
    }
    found = pip_audit_targets(targets)
    assert found is not None
    assert found["environment"] == []
    assert [(f.package, f.version) for f in found["a:1"]] == [("numpy", "1.0")]
    assert [(f.package, f.version) for f in found["b:1"]] == [("NumPy", "1.0.0")]
    calls = fake_pip_audit()
    assert len(calls) == 2  # numpy comes in two versions (1.0 and 1.0.0 are the same)
    for call in calls:
        names = [pin.split("==")[0].lower() for pin in call["pins"]]
        assert len(names) == len(set(names))


def test_no_pip_audit_on_path_means_no_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", os.fspath(tmp_path))
    assert pip_audit_targets({"environment": {"numpy": "1.0"}}) is None
