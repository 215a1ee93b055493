"""The first run of a secured server: an admin key, created once and kept in the home.

Without it nobody could call a server that requires keys. The key goes to a file only its owner
can read (``secrets/admin-key``, 0600); the operator reads it there, gives it to
``DOCKYARD_API_KEY`` and creates narrower keys for everything else.
"""

from __future__ import annotations

from pathlib import Path

from dockyard.home import write_secret
from dockyard.security.principals import Role, local_user
from dockyard.services.workspace import Workspace

ADMIN_KEY_FILE = "admin-key"
ADMIN_KEY_NAME = "admin"


def admin_key_path(workspace: Workspace) -> Path:
    return workspace.home.secrets / ADMIN_KEY_FILE


def ensure_admin_key(workspace: Workspace) -> Path | None:
    """Create the first admin key when the deployment has no active admin key; return the file it
    was written to, else None."""
    if any(record.role is Role.ADMIN for record in workspace.keys.active()):
        return None
    _, key = workspace.keys.create(local_user(), ADMIN_KEY_NAME, Role.ADMIN)
    path = admin_key_path(workspace)
    write_secret(path, f"{key}\n".encode())
    return path
