"""The layout of ``DOCKYARD_HOME``: every path Dockyard writes and the file modes, in one place."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dockyard.errors import DockyardError

DIR_MODE = 0o700
SECRET_FILE_MODE = 0o600


@dataclass(frozen=True)
class Home:
    """Paths under one Dockyard home folder."""

    root: Path

    @property
    def database(self) -> Path:
        return self.root / "dockyard.db"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def artifacts_cache(self) -> Path:
        """Local copies of the blobs of a shared artifact store (``artifact_url``), each verified
        on every use; safe to delete, they are fetched again."""
        return self.root / "artifacts-cache"

    @property
    def predictions_cache(self) -> Path:
        """Other machines' prediction logs downloaded from ``prediction_log_url``
        (``<machine>/<model>/<YYYY-MM-DD>/``), each segment checked as it arrived; safe to delete,
        they are fetched again."""
        return self.root / "predictions-cache"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def tmp(self) -> Path:
        """Scratch folders of running processes, each named after its process id: registrations'
        staging and Python-function models' unpacked code."""
        return self.root / "tmp"

    @property
    def secrets(self) -> Path:
        """Key material (mode 0600 files): the API-key hash key, encryption and signing keys, the
        first admin key."""
        return self.root / "secrets"

    def ensure(self) -> Home:
        """Create the folders (mode 0700) or fail with a message naming the path and the cause."""
        for path in (self.root, self.artifacts, self.backups, self.tmp, self.secrets):
            try:
                path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except OSError as exc:
                raise DockyardError(
                    f"cannot use Dockyard home {self.root}: {path} could not be created "
                    f"({exc.strerror}); set --home or DOCKYARD_HOME to a writable folder"
                ) from exc
            if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
                raise DockyardError(
                    f"cannot use Dockyard home {self.root}: {path} is not readable and writable; "
                    "fix its permissions or set --home or DOCKYARD_HOME to another folder"
                )
        return self


def write_secret(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (0600 from the first byte), then
    move it into place, so no other user can read it and no reader sees half a file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def secret_file(path: Path, make: Callable[[], bytes]) -> bytes:
    """The content of secret file ``path``, created from ``make()`` (mode 0600) when missing.

    Processes starting at once agree: the file is linked into place only if none exists yet, and
    the loser reads the winner's."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    temp = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_secret(temp, make())
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)
    return path.read_bytes()


def process_is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host: what is named after a process (staging folders,
    metrics snapshots, log segments) is swept or merged only once it is gone. Unsure (another
    user's process, a number no process can have) counts as alive."""
    if pid <= 0 or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def try_lock(path: Path) -> int | None:
    """Take an exclusive ``flock`` on ``path`` (created 0600, its folder 0700) without waiting:
    the open descriptor, which holds the lock until it is closed (or this process dies); None
    when another process holds it. How one process per home is chosen for a periodic job."""
    path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, SECRET_FILE_MODE)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor
