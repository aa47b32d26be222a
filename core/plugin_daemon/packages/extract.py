"""safe_extract: unpack a package into a folder that appears whole or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .archive import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE, read_archive
from .errors import PackageError


def safe_extract(
    data: bytes, dest: Path, *, max_size: int = DEFAULT_MAX_SIZE, max_entries: int = DEFAULT_MAX_ENTRIES
) -> None:
    """Extract into a hidden sibling folder, then rename it to ``dest`` (replacing any old ``dest``).

    The archive is checked in full before anything is written; on any failure nothing is left behind
    and an existing ``dest`` is untouched.
    """
    archive = read_archive(data, max_size=max_size, max_entries=max_entries)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        staging.chmod(0o755)
        root = staging.resolve()
        for name, content in archive.files.items():
            target = staging.joinpath(*name.split("/"))
            if not target.resolve().is_relative_to(root):  # read_archive already refuses these
                raise PackageError(f"zip entry {name!r} escapes the package folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "xb") as handle:
                handle.write(content)
        _swap_into_place(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_into_place(staging: Path, dest: Path) -> None:
    if not dest.exists() and not dest.is_symlink():
        os.rename(staging, dest)
        return
    retired = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex}")
    os.rename(dest, retired)
    try:
        os.rename(staging, dest)
    except BaseException:
        os.rename(retired, dest)
        raise
    if retired.is_dir() and not retired.is_symlink():
        shutil.rmtree(retired, ignore_errors=True)
    else:
        retired.unlink()
