"""Folder artifacts as one tar file: packed deterministically, unpacked only inside their target.

The same folder always packs to the same bytes (sorted names, zeroed times and owners), so the
artifact's digest changes only when the code does.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from dockyard.errors import InvalidInput

SKIPPED_NAMES = frozenset({"__pycache__", ".git", ".DS_Store"})
"""Build leftovers and metadata that are not part of a model's code."""


def pack_folder(folder: Path, target: Path) -> None:
    """Write ``folder``'s regular files and directories to the tar ``target``, deterministically.

    Symbolic links and other special files are refused: they could point outside the folder.
    """
    paths = sorted(
        path
        for path in folder.rglob("*")
        if not SKIPPED_NAMES.intersection(path.relative_to(folder).parts)
    )
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise InvalidInput(
                    f"{path} is a link or special file; a model folder may not hold one"
                )
            info = tar.gettarinfo(str(path), arcname=path.relative_to(folder).as_posix())
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def unpack_once(archive: Path, target: Path) -> Path:
    """Unpack ``archive`` into ``target`` unless it is there already; return ``target``.

    Every member is checked before anything is written: absolute names, ``..`` parts, links and
    special files are refused. Unpacking goes to a temporary sibling renamed into place, so
    workers racing on the same archive never see a half-written folder.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(archive, member)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            tar.extractall(staging, members=members, filter="data")
            os.replace(staging, target)
        except OSError:
            if not target.is_dir():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_member(archive: Path, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or "\\" in member.name:
        raise InvalidInput(
            f"{archive.name} holds the unsafe path {member.name!r}; refusing to unpack it"
        )
    if not (member.isfile() or member.isdir()):
        raise InvalidInput(
            f"{archive.name} holds {member.name!r}, a link or special file; refusing to unpack it"
        )
