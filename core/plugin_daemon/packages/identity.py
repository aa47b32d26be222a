"""Plugin names, versions and the unique identifier ``author/name:version@checksum``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import PackageError

# Go's regexp \d and \w are ASCII-only: so are these (re.ASCII).
VERSION_RE = re.compile(r"\d{1,4}(\.\d{1,4}){2}(-\w{1,16})?", re.ASCII)
AUTHOR_RE = re.compile(r"[a-z0-9_-]{1,64}", re.ASCII)
NAME_RE = re.compile(r"[a-z0-9_-]{1,128}", re.ASCII)
_IDENTIFIER_RE = re.compile(
    r"(?:(?P<author>[a-z0-9_-]{1,64})/)?(?P<name>[a-z0-9_-]{1,255})"
    r":(?P<version>[0-9]{1,4}(?:\.[0-9]{1,4}){1,3}(?:-\w{1,16})?)"
    r"@(?P<checksum>[a-f0-9]{32,64})",
    re.ASCII,
)
# The forms Go's uuid.Parse accepts for an author that can pass AUTHOR_RE.
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}", re.ASCII)


def looks_like_uuid(text: str) -> bool:
    """True for an author the Go daemon would take for a UUID (the mark of a remote debugging plugin)."""
    return _UUID_RE.fullmatch(text) is not None


@dataclass(frozen=True)
class PluginIdentifier:
    """``author/name:version@checksum``; ``author`` is empty when the identifier has none."""

    author: str
    name: str
    version: str
    checksum: str

    @classmethod
    def parse(cls, text: str) -> PluginIdentifier:
        match = _IDENTIFIER_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise PackageError(f"plugin unique identifier {text!r} is not of the form author/name:version@checksum")
        return cls(
            author=match["author"] or "",
            name=match["name"],
            version=match["version"],
            checksum=match["checksum"],
        )

    @property
    def plugin_id(self) -> str:
        return f"{self.author}/{self.name}" if self.author else self.name

    def __str__(self) -> str:
        return f"{self.plugin_id}:{self.version}@{self.checksum}"
