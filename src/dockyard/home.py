"""The layout of ``DOCKYARD_HOME``: every path Dockyard writes and the file modes, in one place."""

from __future__ import annotations

import os
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
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def tmp(self) -> Path:
        """Scratch folders of running processes, each named after its process id: registrations'
        staging and Python-function models' unpacked code."""
        return self.root / "tmp"

    def ensure(self) -> Home:
        """Create the folders (mode 0700) or fail with a message naming the path and the cause."""
        for path in (self.root, self.artifacts, self.backups, self.tmp):
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
