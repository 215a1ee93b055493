"""Tree ensembles compiled to native code with tl2cgen: Treelite's model (``treelite_import``)
turned into C, built by this machine's compiler into a shared library.

Native code runs whatever it holds, so it is built only here, by the operator's own
``dockyard optimize --target native`` on the machine (platform) that serves it, never taken in
from elsewhere; the library is stored content-addressed as any artifact, and its runtime
(``runtimes.treelite_native``) loads it only when its bytes match the digest the version records.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from dockyard.errors import OptimizationRefused
from dockyard.optimize.conversion import (
    EXTRA,
    Converted,
    Source,
    converter_errors,
    package_version,
)
from dockyard.optimize.treelite_import import FRAMEWORKS as TREELITE_FRAMEWORKS
from dockyard.optimize.treelite_import import TreeliteConverter
from dockyard.runtimes.base import import_extra
from dockyard.runtimes.treelite_native import NATIVE_FORMAT, platform_tag

logger = logging.getLogger(__name__)
NAME = "tl2cgen"
COMPILERS = ("gcc", "clang")
TREES_PER_UNIT = 25
"""Trees per C file: a 300-tree model builds as 12 files, on every core."""
QUANTIZED_INPUT = "float64"
"""tl2cgen's ``quantize`` is asked for models with float64 thresholds (scikit-learn's, LightGBM's):
each feature is first mapped to its place among the model's own thresholds, and the trees
compare integers. On the benchmark's 300-tree gradient boosting: 2.4 → 0.9 ms for 64 rows, 0.12 →
0.06 ms for one. With XGBoost's float32 thresholds the quantized code answers differently for a
float64 feature just below a threshold (0.12392197549343108 against 0.12392197549343109: off by
9e-4, caught by the split rows of the proof), so those are built as they are."""


class Tl2cgenConverter:
    """Tree ensembles → Treelite → C → a shared library built here."""

    name = NAME
    target = "native"
    frameworks: tuple[str, ...] = TREELITE_FRAMEWORKS

    def convert(self, source: Source) -> Converted:
        toolchain = next((name for name in COMPILERS if shutil.which(name)), None)
        if toolchain is None:
            raise OptimizationRefused(
                f"{NAME} needs a C compiler ({' or '.join(COMPILERS)}) on this machine: native "
                "code is built on the machine that serves it"
            )
        version = package_version(NAME)
        tree_model = TreeliteConverter().convert(source)
        treelite = import_extra("treelite", NAME, EXTRA)
        tl2cgen = import_extra("tl2cgen", NAME, EXTRA)
        with tempfile.TemporaryDirectory(prefix="dockyard-tl2cgen-") as folder:
            library = Path(folder) / "model.so"
            with converter_errors(NAME), _native_output_logged():
                model = treelite.Model.deserialize_bytes(tree_model.payload)
                units = max(1, -(-int(model.num_tree) // TREES_PER_UNIT))
                quantize = int(model.input_type == QUANTIZED_INPUT)
                tl2cgen.export_lib(
                    model,
                    toolchain=toolchain,
                    libpath=str(library),
                    params={"parallel_comp": units, "quantize": quantize},
                    nthread=os.cpu_count() or 1,
                )
            payload = library.read_bytes()
        options = {
            **tree_model.options,
            "library_sha256": hashlib.sha256(payload).hexdigest(),
            "platform": platform_tag(),
            "toolchain": toolchain,
        }
        return replace(
            tree_model,
            format=NATIVE_FORMAT,
            filename="model.so",
            payload=payload,
            options=options,
            converter=NAME,
            converter_version=version,
        )


@contextlib.contextmanager
def _native_output_logged() -> Iterator[None]:
    """tl2cgen's C++ library and the compiler write to the process's own stdout and stderr (a
    warning that its bundled Treelite is older than the model's, the build's progress), which
    would corrupt ``--json`` output: both file descriptors go to a file meanwhile, logged at debug
    level afterwards. A command-line conversion runs on the main thread, alone."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    said = io.StringIO()  # tl2cgen's Python log callback prints to sys.stdout
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
            sink.seek(0)
            text = (sink.read().decode("utf-8", "replace") + said.getvalue()).strip()
            if text:
                logger.debug("tl2cgen said: %s", text)
