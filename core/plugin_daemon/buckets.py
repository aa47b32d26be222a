"""Folders of named blobs on disk, named as the Go daemon names them: packages and installed
packages by unique identifier (``author/name:version@checksum``, so one folder per author), assets
by media id.

Names are checked against a strict pattern (at most one ``/``, each part a plain name), so no name
given by a caller can leave the folder. Writes go to a temporary file in the bucket's root first and
are renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

#: a blob being written; renamed into place when whole (a name never matches _SAFE_PART)
TEMPORARY_PREFIX = ".tmp-"
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:@-]{0,254}$")


class Bucket:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        parts = name.split("/") if isinstance(name, str) else []
        if not 1 <= len(parts) <= 2 or not all(_SAFE_PART.match(part) for part in parts) or ".." in name:
            raise KeyError(f"invalid blob name {name!r}")
        return self.root.joinpath(*parts)

    def put(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        if target.exists() and target.stat().st_size == len(data):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.root, prefix=TEMPORARY_PREFIX)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return target

    def get(self, name: str) -> bytes | None:
        try:
            return self.path(name).read_bytes()
        except (KeyError, FileNotFoundError):
            return None

    def exists(self, name: str) -> bool:
        try:
            return self.path(name).is_file()
        except KeyError:
            return False

    def remove_temporary(self) -> int:
        """Remove the temporary files of writes that never finished (the process was killed); call
        at start, before any write. Returns how many were removed."""
        removed = 0
        for leftover in self.root.glob(f"{TEMPORARY_PREFIX}*"):
            if leftover.is_file() and not leftover.is_symlink():
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def delete(self, name: str) -> None:
        with contextlib.suppress(KeyError):
            self.path(name).unlink(missing_ok=True)
