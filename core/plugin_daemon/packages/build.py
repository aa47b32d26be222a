"""build_package: zip a plugin folder into a .difypkg, the same bytes for the same folder."""

from __future__ import annotations

import os
from pathlib import Path

from .archive import write_archive
from .decode import decode_package
from .errors import PackageError
from .ignore import IgnoreRule, is_ignored, parse_ignore_file

IGNORE_FILES = (".difyignore", ".gitignore")  # the first that exists is used, as the Go packager does
SKIPPED_FOLDERS = frozenset({".venv", "__pycache__", ".git"})
SKIPPED_ROOT_FOLDERS = frozenset({"dist", "build"})
SKIPPED_FILES = frozenset({".env", ".DS_Store"})
SKIPPED_SUFFIXES = (".pyc", ".difypkg")


def build_package(folder: Path) -> bytes:
    """Zip ``folder`` (sorted entries, fixed timestamps) and check the result with decode_package."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PackageError(f"{folder} is not a folder")
    rules = _ignore_rules(folder)
    entries = [(path, (folder / path).read_bytes()) for path in sorted(_package_paths(folder, rules))]
    data = write_archive(entries)
    try:
        decode_package(data)
    except PackageError as exc:
        raise PackageError(f"the package built from {folder} is invalid: {exc.message}") from None
    return data


def _ignore_rules(folder: Path) -> list[IgnoreRule]:
    for name in IGNORE_FILES:
        path = folder / name
        if path.is_file():
            return parse_ignore_file(path.read_text(encoding="utf-8", errors="replace"))
    return []


def _package_paths(folder: Path, rules: list[IgnoreRule]) -> list[str]:
    paths = []
    for current, folders, files in os.walk(folder):
        relative = Path(current).relative_to(folder).as_posix()
        prefix = "" if relative == "." else f"{relative}/"
        kept = []
        for name in folders:
            path = prefix + name
            if _skipped_folder(name, prefix) or is_ignored(rules, path, True):
                continue
            if os.path.islink(os.path.join(current, name)):
                raise PackageError(
                    f"{path} is a symbolic link; packages hold only regular files (or list it in .difyignore)"
                )
            kept.append(name)
        folders[:] = kept
        for name in files:
            path = prefix + name
            if name in SKIPPED_FILES or name.endswith(SKIPPED_SUFFIXES) or is_ignored(rules, path, False):
                continue
            if os.path.islink(os.path.join(current, name)):
                raise PackageError(
                    f"{path} is a symbolic link; packages hold only regular files (or list it in .difyignore)"
                )
            paths.append(path)
    return paths


def _skipped_folder(name: str, prefix: str) -> bool:
    return name in SKIPPED_FOLDERS or (not prefix and name in SKIPPED_ROOT_FOLDERS)
