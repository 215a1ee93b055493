"""Reading the prediction log of several machines from ``prediction_log_url``: each other
machine's segments of the window downloaded once into ``predictions-cache/<machine>/`` (checked
against their recorded SHA-256 and size as they arrive; ``bucket``), then read as this home's
log is (``read_predictions``: sealed segments with this home's key) and put together in time
order. This home's own rows are read from its folder, which is ahead of its copy in the bucket.

The cache follows the bucket: a cached segment whose object is gone or was written again (an
erasure's rewrite, a purge) is deleted before anything is read, so a row erased on its machine is
not read here once that machine's mirror has passed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from dockyard.config import Settings
from dockyard.errors import NotFound
from dockyard.home import Home
from dockyard.monitoring.predlog.bucket import Listed, LogBucket
from dockyard.monitoring.predlog.layout import BASE_SCHEMA, log_cipher, predictions_folder
from dockyard.monitoring.predlog.reader import read_predictions
from dockyard.monitoring.predlog.storage import SEGMENT_NAME, concat
from dockyard.registry.refs import check_name

logger = logging.getLogger(__name__)

ETAG_SUFFIX = ".etag"
"""Beside each cached segment, ``.<name>.etag``: the ETag of the object it was downloaded from."""


def read_machines(
    home: Home,
    settings: Settings,
    model: str,
    machines: Sequence[str] | None,
    *,
    since: datetime | None,
    version: int | None = None,
    limit: int | None = None,
) -> pa.Table:
    """``model``'s rows since ``since`` of ``machines`` (None: every machine in the bucket of
    ``prediction_log_url`` and this one, ``log_machine``), in time order, sealed segments read
    with this home's key; ``limit``: the newest rows only. See the module."""
    check_name(model)
    bucket = LogBucket.from_settings(settings)
    own = settings.effective_log_machine()
    cipher = log_cipher(settings, home)
    listed = bucket.machines()
    names = sorted({*listed, own}) if machines is None else list(dict.fromkeys(machines))
    for name in names:
        if name != own and name not in listed:
            shown = ", ".join(listed) or "none"
            raise NotFound(f"no machine {name!r} in {bucket.url} (its machines: {shown})")
    if machines is None:
        _forget_machines(home.predictions_cache, set(listed), model)
    tables = []
    for name in names:
        if name == own:
            folder = predictions_folder(home, model)
        else:
            folder = _synced(bucket, home.predictions_cache / name, name, model, since)
        table = read_predictions(
            home, model, since=since, version=version, cipher=cipher, limit=limit, folder=folder
        )
        if table.num_rows:
            tables.append(table)
    table = concat(tables, BASE_SCHEMA)
    if len(tables) > 1:
        table = table.sort_by("time")
    if limit is not None and table.num_rows > limit:
        table = table.slice(table.num_rows - limit)
    return table


def _synced(
    bucket: LogBucket, cache: Path, machine: str, model: str, since: datetime | None
) -> Path:
    """``machine``'s folder of ``model`` in the cache, holding what the bucket holds: segments
    no longer there (or written again) deleted, those of the window downloaded."""
    objects = bucket.objects(machine, model)
    folder = cache / model
    for path in _cached(folder):
        name = f"{model}/{path.parent.name}/{path.name}"
        listed = objects.get(name)
        if listed is None or _etag(path) != listed.etag:
            _drop(path)
    oldest = math.floor(since.timestamp() * 1000) if since is not None else -1
    first_day = since.astimezone(UTC).strftime("%Y-%m-%d") if since is not None else ""
    for name, listed in sorted(objects.items()):
        _, day, segment = name.split("/")
        target = folder / day / segment
        if day < first_day or _last(segment) < oldest or target.exists():
            continue
        bucket.fetch(machine, name, target)
        _remember(target, listed)
    return folder


def _forget_machines(cache: Path, listed: set[str], model: str) -> None:
    """Delete the cached log of ``model`` of machines no longer in the bucket."""
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(cache):
            if name not in listed:
                for path in _cached(cache / name / model):
                    _drop(path)


def _cached(folder: Path) -> list[Path]:
    """The segments in the day folders of a cached model folder."""
    return sorted(path for path in folder.glob("*/*") if SEGMENT_NAME.match(path.name))


def _last(segment: str) -> int:
    match = SEGMENT_NAME.match(segment)
    assert match is not None  # the bucket lists segment names only
    return int(match[3] or match[2])


def _etag_file(path: Path) -> Path:
    return path.with_name(f".{path.name}{ETAG_SUFFIX}")


def _etag(path: Path) -> str:
    try:
        return _etag_file(path).read_text()
    except FileNotFoundError:
        return ""


def _remember(path: Path, listed: Listed) -> None:
    _etag_file(path).write_text(listed.etag)


def _drop(path: Path) -> None:
    path.unlink(missing_ok=True)
    _etag_file(path).unlink(missing_ok=True)
