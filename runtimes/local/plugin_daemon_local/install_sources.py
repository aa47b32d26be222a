"""What a package may ask of its own dependency install (``PLUGIN_PACKAGE_INDEX_OPTIONS``).

A package's ``requirements.txt`` and ``pyproject.toml`` are read before uv sees them:

- always: a file they include (``-r``/``-c``), a local path they install from (``-e``,
  ``--find-links``, ``name @ file:...``, ``[tool.uv.sources]`` ``path``) must lie inside the
  package's folder, symlinks resolved. ``-r ../../../server_key`` made uv print the key into the
  install task's message;
- ``local`` (the default): no package index or remote source of the package's choosing:
  ``--index-url``, ``--extra-index-url``, ``--trusted-host``, ``--find-links`` to a URL, direct
  URL requirements (``name @ https://...``, ``git+...``), ``[tool.uv]`` indexes and
  ``[tool.uv.sources]`` ``git``/``url``/``index`` are refused with the line that asked, so
  dependencies come only from the indexes the operator configured (``uv.lock``: ``url`` and
  ``git`` sources refused, registry sources not checked). ``--no-index`` with
  ``--find-links`` to a folder inside the package (an air-gapped package carrying its wheels) is
  fine;
- ``any``: index options and remote sources are followed, as the Go daemon does.
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

_INCLUDES = {"-r", "--requirement", "-c", "--constraint"}
_EDITABLE = {"-e", "--editable"}
_FIND_LINKS = {"-f", "--find-links"}
_INDEXES = {"-i", "--index-url", "--extra-index-url", "--trusted-host", "--index", "--default-index"}
_OPTIONS = ((_INCLUDES, "include"), (_EDITABLE, "editable"), (_FIND_LINKS, "links"), (_INDEXES, "index"))
_REMOTE = ("http://", "https://", "ftp://", "git+", "hg+", "svn+", "bzr+", "git://", "ssh://")


class PackageSourceRefused(Exception):
    """The package asks its install for something the rule refuses; the message names it."""


def _is_remote(value: str) -> bool:
    return value.lower().startswith(_REMOTE) or "://" in value and not value.lower().startswith("file:")


def _inside(root: Path, value: str, base: Path, what: str) -> Path:
    text = value.removeprefix("file://").removeprefix("file:")
    target = (base / text).resolve()
    if not target.is_relative_to(root):
        raise PackageSourceRefused(f"{what} {value!r} is outside the package; a package may only use its own files")
    return target


def _option(token: str, names: set[str]) -> tuple[str, str | None] | None:
    """``--name value``/``--name=value``/``-xvalue`` → (name, inline value or None)."""
    for name in names:
        if token == name:
            return name, None
        if name.startswith("--") and token.startswith(name + "="):
            return name, token[len(name) + 1 :]
        if not name.startswith("--") and token.startswith(name) and len(token) > len(name):
            return name, token[len(name) :].lstrip("=")
    return None


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        line = pending + raw
        pending = ""
        if line.lstrip().startswith("#"):
            continue
        line = line.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(pending.strip())
    return lines


def check_requirements(root: Path, path: Path, rule: str, seen: set[Path] | None = None) -> None:
    """Check ``path`` (a requirements file inside ``root``) and every file it includes."""
    seen = seen if seen is not None else set()
    if path in seen:
        return
    seen.add(path)
    name = path.relative_to(root)
    for line in _logical_lines(path.read_text(errors="replace")):
        try:
            tokens = shlex.split(line)
        except ValueError:
            tokens = line.split()
        if tokens and not tokens[0].startswith("-"):  # a requirement, perhaps with options after it
            requirement = line.split(" -", 1)[0] if "@" in line else tokens[0]
            _check_requirement(root, requirement, rule, f"{name}: {line!r}")
        index = 0
        while index < len(tokens):
            token = tokens[index]
            for names, kind in _OPTIONS:
                found = _option(token, names)
                if found is None:
                    continue
                option, value = found
                if value is None:
                    index += 1
                    value = tokens[index] if index < len(tokens) else ""
                where = f"{name}: {option}"
                if kind == "index":
                    if rule == "local":
                        raise PackageSourceRefused(
                            f"{where} {value!r}: a package may not choose its package index "
                            "(PLUGIN_PACKAGE_INDEX_OPTIONS=local; the operator's PIP_MIRROR_URL applies)"
                        )
                elif _is_remote(value):
                    if kind == "include" or rule == "local":
                        raise PackageSourceRefused(
                            f"{where} {value!r}: a package may not install from a remote source of its choosing "
                            "(PLUGIN_PACKAGE_INDEX_OPTIONS=local)"
                        )
                else:
                    target = _inside(root, value, path.parent if kind == "include" else root, where)
                    if kind == "include":
                        check_requirements(root, target, rule, seen)
                break
            index += 1


def _check_requirement(root: Path, requirement: str, rule: str, where: str) -> None:
    _, at, reference = requirement.partition("@")
    reference = (reference if at else requirement).strip().split(";")[0].strip()
    if _is_remote(reference):
        if rule == "local":
            raise PackageSourceRefused(
                f"{where}: a direct URL requirement is a source of the package's choosing "
                "(PLUGIN_PACKAGE_INDEX_OPTIONS=local)"
            )
    elif reference.startswith(("file:", ".", "/")):
        _inside(root, reference, root, where)


def check_pyproject(root: Path, path: Path, rule: str) -> None:
    try:
        data = tomllib.loads(path.read_text(errors="replace"))
    except tomllib.TOMLDecodeError:
        return  # uv reports it
    uv: dict[str, Any] = (data.get("tool") or {}).get("uv") or {}
    if rule == "local":
        for key in ("index", "index-url", "extra-index-url", "find-links"):
            if uv.get(key):
                raise PackageSourceRefused(
                    f"pyproject.toml: [tool.uv] {key}: a package may not choose its package index "
                    "(PLUGIN_PACKAGE_INDEX_OPTIONS=local)"
                )
        for requirement in (data.get("project") or {}).get("dependencies") or []:
            if isinstance(requirement, str) and "@" in requirement:
                _check_requirement(root, requirement, rule, f"pyproject.toml: {requirement!r}")
    for package, source in (uv.get("sources") or {}).items():
        for entry in source if isinstance(source, list) else [source]:
            if not isinstance(entry, dict):
                continue
            if "path" in entry:
                _inside(root, str(entry["path"]), root, f"pyproject.toml: [tool.uv.sources] {package} path")
            elif rule == "local" and {"git", "url", "index"} & entry.keys():
                raise PackageSourceRefused(
                    f"pyproject.toml: [tool.uv.sources] {package}: a package may not install from a source "
                    "of its choosing (PLUGIN_PACKAGE_INDEX_OPTIONS=local)"
                )


def check_lock(root: Path, path: Path, rule: str) -> None:
    """``uv.lock``: local sources inside the package; under ``local`` no ``url``/``git`` source.

    Registry sources are not checked: the lock names the index each package came from, and the
    default index cannot be told from one the package chose.
    """
    try:
        data = tomllib.loads(path.read_text(errors="replace"))
    except tomllib.TOMLDecodeError:
        return
    for package in data.get("package") or []:
        source = package.get("source") if isinstance(package, dict) else None
        if not isinstance(source, dict):
            continue
        where = f"uv.lock: {package.get('name')!r}"
        for key in ("path", "directory", "editable", "virtual"):
            if key in source:
                _inside(root, str(source[key]), root, f"{where} {key}")
        if rule == "local" and {"url", "git"} & source.keys():
            raise PackageSourceRefused(
                f"{where} comes from a source of the package's choosing (PLUGIN_PACKAGE_INDEX_OPTIONS=local)"
            )


def check_package_sources(folder: Path, rule: str) -> None:
    """Raise :class:`PackageSourceRefused` if the package's install files ask for what ``rule`` refuses."""
    root = folder.resolve()
    requirements = root / "requirements.txt"
    if requirements.is_file():
        check_requirements(root, _inside(root, "requirements.txt", root, "requirements.txt"), rule)
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        check_pyproject(root, _inside(root, "pyproject.toml", root, "pyproject.toml"), rule)
    lock = root / "uv.lock"
    if lock.is_file():
        check_lock(root, _inside(root, "uv.lock", root, "uv.lock"), rule)
