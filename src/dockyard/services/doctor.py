"""``dockyard doctor``: what a crash, a lost file or a hand edit left wrong in a home, each problem
with its repair. The home is examined as it is (not opened as a Workspace, whose start-up sweep
would hide what a killed process left); only the safe repairs are made, when asked: deleting the
leftovers of processes that are gone, making secret files private again. Artifacts are checked
through the configured store: a shared bucket's blobs are fetched into the cache and re-hashed.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.config import Settings
from dockyard.errors import ArtifactCorrupt, DockyardError
from dockyard.home import SECRET_FILE_MODE, Home, process_is_alive
from dockyard.monitoring.predlog.layout import PREDICTIONS
from dockyard.monitoring.predlog.storage import PARQUET, SEGMENT_NAME
from dockyard.registry.artifacts import MISSING, TEMP_PREFIX
from dockyard.services.backup import LABELS, stale_partials
from dockyard.services.backup_database import audit_problems, opened, stored_versions
from dockyard.services.staging import owner_of
from dockyard.services.workspace import open_artifacts

RESTORE = "restore it from a backup (dockyard backup restore)"
CHECK_STORE = "check artifact_url, s3_endpoint_url, the AWS credentials and the network"


@dataclass(frozen=True)
class Problem:
    """One thing wrong, how to repair it, and the repair itself when it is safe to make."""

    what: str
    repair: str
    fix: Callable[[], None] | None = None


def examine(settings: Settings) -> list[Problem]:
    """Every problem found in ``settings``' home and registry."""
    home = Home(settings.home)
    if not home.root.is_dir():
        return [Problem(f"home {home.root} does not exist", f"{RESTORE} or set --home")]
    return [
        *_registry(settings, home),
        *_leftovers(home),
        *_segments(home),
        *_secrets(home),
    ]


def _registry(settings: Settings, home: Home) -> list[Problem]:
    problems = []
    try:
        with opened(settings.effective_database_url()) as engine:
            versions = stored_versions(engine)
            broken = audit_problems(engine)
    except DockyardError as exc:
        return [Problem(f"the registry database cannot be opened: {exc.message}", RESTORE)]
    try:
        store = open_artifacts(settings, home)
    except DockyardError as exc:
        return [Problem(f"the artifact store cannot be opened: {exc.message}", CHECK_STORE)]
    for version in versions:
        try:
            store.verified_path(version.digest)
        except ArtifactCorrupt as exc:
            state = "is missing" if exc.actual == MISSING else "is corrupt"
            problems.append(
                Problem(
                    f"version {version.model}:{version.version}'s artifact sha256:"
                    f"{version.digest} {state}",
                    f"{RESTORE}, or archive the version "
                    f"(dockyard models archive {version.model}:{version.version})",
                )
            )
        except DockyardError as exc:
            # The bucket cannot be reached: every other version would say the same.
            problems.append(
                Problem(f"the artifact store cannot be checked: {exc.message}", CHECK_STORE)
            )
            break
    problems += [
        Problem(problem, f"restore the registry database from a backup ({RESTORE})")
        for problem in broken
    ]
    return problems


def _leftovers(home: Home) -> list[Problem]:
    """Files and folders of processes killed midway: staging folders, artifact and backup
    temporaries."""
    found: list[Path] = []
    if home.tmp.is_dir():
        found += [
            path
            for path in sorted(home.tmp.iterdir())
            if (pid := owner_of(path)) is not None and not process_is_alive(pid)
        ]
    temps = [*home.artifacts.glob(f"??/{TEMP_PREFIX}*")]
    temps += home.artifacts_cache.glob(f"??/{TEMP_PREFIX}*")
    for path in sorted(temps):
        owner = path.name[len(TEMP_PREFIX) :].partition("-")[0]
        if not (owner.isdigit() and process_is_alive(int(owner))):
            found.append(path)
    found += stale_partials(home.backups)
    return [
        Problem(
            f"{path} was left by a process that is gone",
            "delete it (dockyard doctor --repair)",
            functools.partial(_delete, path),
        )
        for path in found
    ]


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _segments(home: Home) -> list[Problem]:
    """Plain Parquet segments of the prediction log and the labels that cannot be read (sealed
    ones need the ``encryption_key`` setting and are read by the commands that have it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    problems = []
    for root in (home.root / PREDICTIONS, home.root / LABELS):
        for path in sorted(root.rglob(f"*{PARQUET}")) if root.is_dir() else []:
            if not SEGMENT_NAME.match(path.name):
                continue
            try:
                pq.read_metadata(path)
            except (OSError, pa.ArrowException) as exc:
                problems.append(
                    Problem(
                        f"log segment {path} is unreadable ({exc})",
                        f"{RESTORE}, or delete it (its rows are lost)",
                    )
                )
    return problems


def _secrets(home: Home) -> list[Problem]:
    problems = []
    for path in sorted(home.secrets.iterdir()) if home.secrets.is_dir() else []:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_file() and mode & 0o077:
            problems.append(
                Problem(
                    f"secret file {path} can be read by others (mode {mode:o})",
                    f"make it private: chmod 600 {path} (dockyard doctor --repair)",
                    functools.partial(os.chmod, path, SECRET_FILE_MODE),
                )
            )
    return problems
