"""A package's readmes: ``README.md`` at its root (en_US) and ``readme/README_<language>.md``."""

from __future__ import annotations

import re
from collections.abc import Mapping

DEFAULT_LANGUAGE = "en_US"
_ROOT_README = "README.md"
_LANGUAGE_README = re.compile(r"^readme/README_([a-z]{2}_[A-Za-z]{2,})\.md$")


def is_readme(path: str) -> bool:
    return path == _ROOT_README or _LANGUAGE_README.match(path) is not None


def readmes(files: Mapping[str, bytes]) -> dict[str, str]:
    """language -> readme text, for every readme among ``files`` (path -> content)."""
    found: dict[str, str] = {}
    for path, content in files.items():
        match = _LANGUAGE_README.match(path)
        language = DEFAULT_LANGUAGE if path == _ROOT_README else match.group(1) if match else None
        if language is not None:
            found[language] = content.decode("utf-8", errors="replace")
    if _ROOT_README in files:  # the root readme is en_US, whatever readme/ holds
        found[DEFAULT_LANGUAGE] = files[_ROOT_README].decode("utf-8", errors="replace")
    return found


def pick_readme(found: Mapping[str, str], language: str) -> tuple[str, str] | None:
    """(language, text): the one asked for, else en_US, else the first in language order; None if none."""
    for candidate in (language, DEFAULT_LANGUAGE, *sorted(found)):
        if candidate in found:
            return candidate, found[candidate]
    return None
