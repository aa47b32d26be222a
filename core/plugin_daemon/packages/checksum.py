"""The package checksum of the Go daemon (decoder/checksum.go)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def package_checksum(files: Mapping[str, bytes]) -> str:
    """Hex sha256 over ``sha256(path) || sha256(content)`` for every path, paths sorted."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(hashlib.sha256(path.encode("utf-8")).digest())
        digest.update(hashlib.sha256(files[path]).digest())
    return digest.hexdigest()
