"""Crafted model files, as an attacker would upload them, for the tests that must refuse them."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import skops.io


def datasource_skops(path: Path, victim: Path) -> Path:
    """A skops file whose only object is a ``numpy.lib.npyio.DataSource`` (the module the class
    reports) set up so that its ``__del__`` deletes the folder ``victim`` when it is freed."""
    state = {"_destpath": str(victim), "_istmpdest": True}
    schema = json.loads(zipfile.ZipFile(io.BytesIO(skops.io.dumps(state))).read("schema.json"))
    header = {key: schema.pop(key) for key in ("protocol", "_skops_version")}
    root = {"__class__": "DataSource", "__module__": "numpy.lib.npyio", "__loader__": "ObjectNode"}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("schema.json", json.dumps(root | {"content": schema} | header))
    return path
