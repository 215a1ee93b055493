"""Which request bodies a load test sends: the user's file, else the reference profile the
Dockyard server keeps for the version, else values made up from the V2 metadata; one trial request
checks the server takes them before any stage starts."""

from __future__ import annotations

from pathlib import Path

from dockyard.loadtest.inputs import (
    bodies_from_file,
    bodies_from_metadata,
    bodies_from_profile,
    specs_from_metadata,
)
from dockyard.loadtest.target import Target, fetch_metadata, fetch_profile, try_once

FILE = "file"
PROFILE = "profile"
METADATA = "metadata"


def choose_bodies(target: Target, input_file: Path | None, rows: int) -> tuple[list[bytes], str]:
    """The bodies to send and where they came from (``file``, ``profile``, ``metadata``)."""
    metadata = fetch_metadata(target)
    if input_file is not None and input_file.suffix.lower() == ".json":
        bodies, source = bodies_from_file(input_file, [], rows), FILE
    else:
        specs = specs_from_metadata(metadata)
        if input_file is not None:
            bodies, source = bodies_from_file(input_file, specs, rows), FILE
        else:
            profile = fetch_profile(target, metadata)
            from_profile = bodies_from_profile(profile, specs, rows) if profile else None
            if from_profile is not None:
                bodies, source = from_profile, PROFILE
            else:
                bodies, source = bodies_from_metadata(specs, rows), METADATA
    try_once(target, bodies[0])
    return bodies, source
