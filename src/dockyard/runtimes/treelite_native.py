"""Native code that tl2cgen built from a Treelite model (``dockyard optimize --target native``),
loaded with tl2cgen's Predictor.

Loading a shared library runs its code, so the library is loaded only from bytes whose SHA-256 is
the one the version records (checked here, on the very bytes loaded, after the store has checked
the file), copied into a private folder of its own, and only on the platform it was built for.
The outputs are made as the GTIL runtime makes them, from the same head.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dockyard.errors import ArtifactCorrupt, InvalidInput
from dockyard.runtimes.base import LoadOptions, import_extra
from dockyard.runtimes.formats import model_file_errors

NATIVE_FORMAT = "tl2cgen-so"
FRAMEWORK = "treelite"
EXTRA = "optimize"


def platform_tag() -> str:
    """The platform a library built here runs on: ``linux-x86_64``."""
    return f"{sys.platform}-{platform.machine()}"


def load_native(path: Path, opts: LoadOptions) -> tuple[Any, Any]:
    """(the loaded Predictor, a predict function shaped like ``treelite.gtil.predict``)."""
    built_for = str(opts.options.get("platform", ""))
    if built_for != platform_tag():
        raise InvalidInput(
            f"this native model was built for {built_for or 'an unknown platform'}, not "
            f"{platform_tag()}: run `dockyard optimize SOURCE --target native` on this machine"
        )
    expected = str(opts.options.get("library_sha256", ""))
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ArtifactCorrupt(str(path), expected, actual)
    tl2cgen = import_extra("tl2cgen", FRAMEWORK, EXTRA)
    folder = Path(tempfile.mkdtemp(prefix="native-", dir=opts.cache_dir))  # 0700
    try:
        library = folder / "model.so"
        library.write_bytes(data)
        with model_file_errors(FRAMEWORK, f"loading the native library {path.name}"):
            predictor = tl2cgen.Predictor(str(library), nthread=1)
    finally:
        # Mapped into the process already; nothing reads the file again.
        shutil.rmtree(folder, ignore_errors=True)
    dmatrix = tl2cgen.DMatrix

    def predict(model: Any, table: np.ndarray, nthread: int = 1) -> np.ndarray:
        return np.asarray(model.predict(dmatrix(table, dtype=str(table.dtype))))

    return predictor, predict
