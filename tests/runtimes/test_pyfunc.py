"""The pyfunc runtime: folders of code, functions from module files, and safe unpacking."""

from __future__ import annotations

import bz2
import gc
import importlib.util
import io
import os
import sys
import tarfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dockyard.errors import InvalidInput, PredictionFailed
from dockyard.runtimes import pyfunc
from dockyard.runtimes.base import LoadOptions
from dockyard.runtimes.tarballs import MAX_MEMBERS

from .conftest import RoundTrip


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def code_folder(tmp_path: Path) -> Path:
    """A model folder whose entry module imports a sibling module."""
    return write(
        tmp_path / "code",
        {
            "scoring_helpers.py": "WEIGHT = 3.0\n",
            "entry.py": """
                import numpy as np
                from scoring_helpers import WEIGHT

                def predict(x):
                    x = np.asarray(x)
                    return {"predict": x.sum(axis=1) * WEIGHT, "twice": x * 2}
            """,
        },
    )


@pytest.fixture
def module_function(tmp_path: Path) -> Callable[..., Any]:
    """A function defined at the top level of a module file, imported the normal way."""
    write(
        tmp_path / "lib",
        {"plain_scoring.py": "def score(x):\n    return [float(sum(row)) for row in x]\n"},
    )
    spec = importlib.util.spec_from_file_location(
        "plain_scoring", tmp_path / "lib/plain_scoring.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: Callable[..., Any] = module.score
    return function


def test_folder_roundtrip(code_folder: Path, features: np.ndarray, roundtrip: RoundTrip) -> None:
    path_before = list(sys.path)

    saved, runtime = roundtrip(
        pyfunc,
        code_folder,
        entrypoint="entry:predict",
        tabular=True,
        output_names=["predict", "twice"],
    )

    assert saved.format == "pyfunc-tar"
    assert saved.options == {
        "entrypoint": "entry:predict",
        "tabular": True,
        "output_names": ["predict", "twice"],
    }
    assert sys.path == path_before
    assert "scoring_helpers" not in sys.modules, "sibling modules must not leak between models"
    result = runtime.predict(features, ["predict"])
    assert list(result) == ["predict"]
    np.testing.assert_allclose(result["predict"], features.sum(axis=1) * 3.0)
    np.testing.assert_allclose(runtime.predict(features, ())["twice"], features * 2)


def test_folder_needs_an_entrypoint(code_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="entrypoint='module:function'"):
        pyfunc.save(code_folder, tmp_path)


@pytest.mark.parametrize(
    ("entrypoint", "message"),
    [("entry", "not of the form"), ("missing:predict", "module 'missing' not found")],
    ids=["malformed", "missing-module"],
)
def test_bad_entrypoint_is_refused(
    entrypoint: str, message: str, code_folder: Path, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        pyfunc.save(code_folder, tmp_path, entrypoint=entrypoint)


def test_missing_function_is_refused_at_load(code_folder: Path, tmp_path: Path) -> None:
    saved = pyfunc.save(code_folder, tmp_path, entrypoint="entry:nope")
    opts = LoadOptions(format="pyfunc-tar", options=saved.options, cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidInput, match="no function 'nope'"):
        pyfunc.load(saved.path, opts)


def test_packing_is_deterministic(code_folder: Path, tmp_path: Path) -> None:
    first = pyfunc.save(code_folder, write(tmp_path / "a", {}), entrypoint="entry:predict")
    os.utime(code_folder / "entry.py", (1_000_000_000, 1_000_000_000))
    second = pyfunc.save(code_folder, write(tmp_path / "b", {}), entrypoint="entry:predict")
    assert first.path.read_bytes() == second.path.read_bytes()


def test_module_function_roundtrip(
    module_function: Callable[..., Any], features: np.ndarray, roundtrip: RoundTrip
) -> None:
    saved, runtime = roundtrip(pyfunc, module_function, tabular=True)

    assert saved.options["entrypoint"] == "plain_scoring:score"
    with tarfile.open(saved.path) as archive:
        assert archive.getnames() == ["plain_scoring.py"]
    # No names recorded: the outputs are what the function returns; a bare array is "predict".
    assert runtime.output_names == ()
    np.testing.assert_allclose(runtime.predict(features, ())["predict"], features.sum(axis=1))


def test_each_load_runs_the_registered_code_not_an_edited_copy(
    code_folder: Path, features: np.ndarray, tmp_path: Path
) -> None:
    """Code edited in the cache after one load is never what a later load runs."""
    saved = pyfunc.save(code_folder, tmp_path, entrypoint="entry:predict")
    opts = LoadOptions(format="pyfunc-tar", options=saved.options, cache_dir=tmp_path / "cache")
    expected = features.sum(axis=1) * 3.0

    first = pyfunc.load(saved.path, opts)
    [unpacked] = (tmp_path / "cache").glob("*-pyfunc-*")
    (unpacked / "entry.py").write_text("def predict(x):\n    return {'predict': [-1.0] * len(x)}\n")
    second = pyfunc.load(saved.path, opts)

    np.testing.assert_allclose(second.predict(features, ["predict"])["predict"], expected)
    np.testing.assert_allclose(first.predict(features, ["predict"])["predict"], expected)
    assert len(list((tmp_path / "cache").glob("*-pyfunc-*"))) == 2
    del first, second
    gc.collect()
    assert not list((tmp_path / "cache").iterdir()), "a runtime's folder goes with it"


def outer() -> Callable[[Any], Any]:
    factor = 2

    def inner(x: Any) -> Any:
        return x * factor

    return inner


@pytest.mark.parametrize(
    ("function", "message"),
    [
        (lambda x: x, "lambda"),
        (outer(), "nested function or closure"),
        (print, "not a Python function"),
    ],
    ids=["lambda", "closure", "builtin"],
)
def test_functions_that_cannot_be_packed(
    function: Callable[..., Any], message: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match=message):
        pyfunc.save(function, tmp_path)


def test_function_from_main_is_refused(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def predict(x):\n    return x\n", namespace)  # as in a script or a notebook
    with pytest.raises(InvalidInput, match="__main__"):
        pyfunc.save(namespace["predict"], tmp_path)


def tar_with(member: tarfile.TarInfo, path: Path) -> Path:
    with tarfile.open(path, "w") as archive:
        if member.isfile():
            archive.addfile(member, io.BytesIO(b"x" * member.size))
        else:
            archive.addfile(member)
    return path


def file_member(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = 1
    return member


def link_member(name: str) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = tarfile.SYMTYPE
    member.linkname = "/etc/passwd"
    return member


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (file_member("../escape.py"), "unsafe path '../escape.py'"),
        (file_member("/abs/escape.py"), "unsafe path '/abs/escape.py'"),
        (link_member("entry.py"), "link or special file"),
    ],
    ids=["dot-dot", "absolute", "symlink"],
)
def test_unsafe_archive_is_refused(member: tarfile.TarInfo, message: str, tmp_path: Path) -> None:
    archive = tar_with(member, tmp_path / "model.tar")
    opts = LoadOptions(
        format="pyfunc-tar", options={"entrypoint": "entry:predict"}, cache_dir=tmp_path / "cache"
    )
    with pytest.raises(InvalidInput, match=message):
        pyfunc.load(archive, opts)
    assert not (tmp_path / "escape.py").exists()
    assert not list((tmp_path / "cache").glob("*-pyfunc-*"))


def test_missing_output_is_prediction_failed(
    module_function: Callable[..., Any], tmp_path: Path
) -> None:
    saved = pyfunc.save(module_function, tmp_path, output_names=["predict", "extra"])
    runtime = pyfunc.load(
        saved.path,
        LoadOptions(format="pyfunc-tar", options=saved.options, cache_dir=tmp_path / "cache"),
    )
    with pytest.raises(PredictionFailed, match="no output 'extra'"):
        runtime.predict([[1.0, 2.0]], ["extra"])
    with pytest.raises(InvalidInput, match="unknown output 'other'"):
        runtime.predict([[1.0, 2.0]], ["other"])


def test_symlink_in_the_folder_is_refused(code_folder: Path, tmp_path: Path) -> None:
    (code_folder / "link.py").symlink_to(code_folder / "entry.py")
    with pytest.raises(InvalidInput, match="link or special file"):
        pyfunc.save(code_folder, tmp_path, entrypoint="entry:predict")


BZIP2_MIB_OF_ZEROS = bz2.compress(bytes(2**20))
"""45 bytes; bzip2 streams concatenate, so N of them inflate to N MiB."""


def bzip2_tar(header: tarfile.TarInfo, path: Path) -> Path:
    """A ``.tar.bz2`` of one header that declares ``header.size`` bytes, all of them zeros."""
    assert header.size % 2**20 == 0
    parts = [bz2.compress(header.tobuf(tarfile.USTAR_FORMAT))]
    parts += [BZIP2_MIB_OF_ZEROS] * (header.size // 2**20)
    parts.append(bz2.compress(bytes(2 * tarfile.BLOCKSIZE)))
    path.write_bytes(b"".join(parts))
    return path


def pax_record(size: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo("././@PaxHeader")
    member.type = tarfile.XHDTYPE
    member.size = size
    return member


def big_file(size: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo("entry.py")
    member.size = size
    return member


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (big_file(2 * 2**30), "MAX_UNPACKED_BYTES"),
        (pax_record(2**30), "MAX_READ_BYTES"),
    ],
    ids=["2-gib-file", "1-gib-pax-record"],
)
def test_a_bzip2_bomb_is_refused_at_once(
    header: tarfile.TarInfo, message: str, tmp_path: Path
) -> None:
    """About 100 KB of bzip2 that inflates to gigabytes: refused from its first header."""
    archive = bzip2_tar(header, tmp_path / "model.tar")
    assert archive.stat().st_size < 200_000
    opts = LoadOptions(
        format="pyfunc-tar", options={"entrypoint": "entry:predict"}, cache_dir=tmp_path / "cache"
    )

    started = time.monotonic()
    with pytest.raises(InvalidInput, match=message):
        pyfunc.load(archive, opts)

    assert time.monotonic() - started < 2.0
    assert not list((tmp_path / "cache").iterdir()), "nothing is left behind"


def test_too_many_members_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tar:
        for number in range(MAX_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"m{number}.py"), io.BytesIO())
    opts = LoadOptions(
        format="pyfunc-tar", options={"entrypoint": "m0:predict"}, cache_dir=tmp_path / "cache"
    )

    with pytest.raises(InvalidInput, match=f"more than {MAX_MEMBERS:,} files and folders"):
        pyfunc.load(archive, opts)
    assert not list((tmp_path / "cache").iterdir())
