"""Where the prediction log lives and the columns every segment starts with: a model's folder,
its day folders (UTC days), the fixed columns, and the cipher segments are sealed with.

Layout: ``$DOCKYARD_HOME/predictions/<model>/<YYYY-MM-DD>/<pid>-<seq>.parquet`` (UTC days); the
segments' names and how they are written: ``dockyard.monitoring.predlog.storage``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pyarrow as pa

from dockyard.config import Settings
from dockyard.encryption import Cipher, open_cipher
from dockyard.home import Home
from dockyard.registry.refs import check_name

PREDICTIONS = "predictions"
DAY_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_S = 86_400
TIME = pa.timestamp("us", tz="UTC")
BASE_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("row", pa.int32()),
        ("time", TIME),
        ("principal", pa.string()),
        ("model", pa.string()),
        ("version", pa.int32()),
        ("latency_ms", pa.float32()),
    ]
)


def predictions_folder(home: Home, model: str) -> Path:
    """Where ``model``'s segments live (the name checked: it becomes a path)."""
    return home.root / PREDICTIONS / check_name(model)


def day_folders(root: Path) -> list[Path]:
    """Every day folder of every model folder under ``root`` (the prediction log's), sorted; a
    folder removed while it is listed (a purge, an erasure) is left out."""
    folders: list[Path] = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for model in os.scandir(root):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                folders += [
                    Path(day.path)
                    for day in os.scandir(model.path)
                    if DAY_NAME.match(day.name) and day.is_dir()
                ]
    return sorted(folders)


def log_cipher(settings: Settings, home: Home) -> Cipher | None:
    """The cipher segments are sealed with: the ``encryption_key`` setting's, else None (plain)."""
    return open_cipher(home.secrets, settings.encryption_key) if settings.encryption_key else None


def day_name(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * DAY_S))
