"""Finding Python interpreters: one for a given ``X.Y``, or every one on the machine.

Candidates are probed by running them (a pyenv shim for a version that is not selected exits
127, so existing on PATH proves nothing): the configured ``PYTHON_INTERPRETER_PATH`` when its
version matches, ``pythonX.Y`` in every PATH entry, pyenv's versions, /usr/local/bin, /usr/bin,
then ``uv python find``. Interpreters inside a virtualenv are skipped (a plugin venv is built on
a real installation, recorded by its real path, not a shim). When nothing matches, the
configured interpreter or the daemon's own Python is used, with a warning.

``InterpreterFinder.every`` lists every Python (``python3`` and ``python3.N``) of PATH (pyenv's
shims skipped), pyenv's versions and the Pythons uv downloaded, newest first, for the choice against a
plugin's ``requires-python`` (``python_choice``).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from packaging.version import InvalidVersion, Version

logger = logging.getLogger(__name__)

#: The Python asked for when a manifest names none (the Go daemon always uses 3.12).
DEFAULT_VERSION = "3.12"
PROBE_TIMEOUT = 15.0
_PROBE = (
    "import sys; print('%d.%d.%d' % sys.version_info[:3]); "
    "print(int(sys.prefix != sys.base_prefix)); print(sys.executable)"
)
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")
#: Executable names ``every`` looks for in a folder.
_PYTHON_NAME = re.compile(r"^python3(\.\d+)?$")
#: Folders searched after PATH and pyenv.
SYSTEM_FOLDERS = ("/usr/local/bin", "/usr/bin")
#: Probes run at once while listing every interpreter.
PROBE_CONCURRENCY = 4


@dataclass(frozen=True)
class Interpreter:
    """A Python that runs. ``matches`` is False for a fallback of another version."""

    path: str
    version: str  # full version, e.g. "3.11.7"
    requested: str  # "X.Y"
    matches: bool

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])

    @property
    def sort_key(self) -> Version:
        try:
            return Version(self.version)
        except InvalidVersion:
            return Version("0")


def requested_version(declaration: dict) -> str:
    """``meta.runner.version`` reduced to ``X.Y`` (``DEFAULT_VERSION`` when absent or unreadable)."""
    runner = ((declaration.get("meta") or {}).get("runner")) or {}
    match = _VERSION.match(str(runner.get("version") or ""))
    return f"{match.group(1)}.{match.group(2)}" if match else DEFAULT_VERSION


def _pyenv_candidates(root: Path, name: str) -> Iterator[Path]:
    versions = root / "versions"
    if not versions.is_dir():
        return

    def key(path: Path) -> tuple[int, ...]:
        return tuple(int(part) if part.isdigit() else -1 for part in re.split(r"[.\-]", path.parent.parent.name))

    yield from sorted(versions.glob(f"*/bin/{name}"), key=key, reverse=True)


class InterpreterFinder:
    """Finds (and remembers) one interpreter per requested ``X.Y`` version."""

    def __init__(self, *, uv_bin: str | None, configured: str = "") -> None:
        self._uv_bin = uv_bin
        self._configured = configured
        self._found: dict[str, Interpreter] = {}
        self._every: list[Interpreter] | None = None
        self._lock = anyio.Lock()

    async def find(self, version: str) -> Interpreter:
        async with self._lock:
            found = self._found.get(version)
            if found is None:
                found = await self._search(version)
                self._found[version] = found
            return found

    async def every(self, *, refresh: bool = False) -> list[Interpreter]:
        """Every working Python outside a virtualenv, newest first (looked for once, or again on ``refresh``)."""
        async with self._lock:
            if self._every is None or refresh:
                self._every = await self._list_every()
            return self._every

    def _static_candidates(self, version: str) -> Iterator[str]:
        name = f"python{version}"
        if self._configured:
            yield self._configured
        for entry in _path_entries():
            yield str(Path(entry) / name)
        for root in _pyenv_roots():
            yield from (str(path) for path in _pyenv_candidates(root, name))
        for folder in SYSTEM_FOLDERS:
            yield f"{folder}/{name}"

    def _every_candidate(self, uv_managed: Path | None) -> Iterator[str]:
        if self._configured:
            yield self._configured
        roots = _pyenv_roots()
        shims = {str(root / "shims") for root in roots}  # each one runs a version listed below
        for folder in _path_entries():  # as uv looks (the system folders are on PATH anyway)
            if folder.rstrip("/") in shims:
                continue
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            yield from (str(Path(folder) / name) for name in names if _PYTHON_NAME.match(name))
        installs = [root / "versions" for root in roots] + ([uv_managed] if uv_managed else [])
        for install in installs:
            pythons = sorted(install.glob("*/bin/python3*"))
            yield from (str(path) for path in pythons if _PYTHON_NAME.match(path.name))

    async def _list_every(self) -> list[Interpreter]:
        by_real: dict[str, str] = {}  # one probe per file (pyenv's python3 links to python3.N)
        for path in self._every_candidate(await self._uv_managed_folder()):
            if _is_python(path):
                by_real.setdefault(os.path.realpath(path), path)
        candidates = list(by_real.values())
        probes: dict[str, Probe | None] = {}
        limiter = anyio.CapacityLimiter(PROBE_CONCURRENCY)

        async def run(path: str) -> None:
            async with limiter:
                probes[path] = await probe(path)

        async with anyio.create_task_group() as group:
            for path in candidates:
                group.start_soon(run, path)
        found: dict[str, Interpreter] = {}
        for path in candidates:
            result = probes.get(path)
            if result is None or result.in_venv:
                continue
            real = os.path.realpath(result.executable)
            if real not in found:
                short = ".".join(result.version.split(".")[:2])
                found[real] = Interpreter(result.executable, result.version, short, True)
        return sorted(found.values(), key=lambda interpreter: interpreter.sort_key, reverse=True)

    async def _search(self, version: str) -> Interpreter:
        tried: set[str] = set()
        for candidate in self._static_candidates(version):
            if candidate in tried or not os.access(candidate, os.X_OK):
                continue
            tried.add(candidate)
            found = await probe(candidate)
            if found is not None and found.matches(version):
                return Interpreter(found.executable, found.version, version, True)
        if self._uv_bin:
            located = await self._uv_find(version)
            if located and located not in tried:
                found = await probe(located)
                if found is not None and found.matches(version):
                    return Interpreter(found.executable, found.version, version, True)
        for fallback in (self._configured, sys.executable):
            if not fallback:
                continue
            found = await probe(fallback)
            if found is not None:
                full = found.version
                logger.warning(
                    "no Python %s found (PATH, pyenv, /usr/local/bin, /usr/bin, uv python find); "
                    "using %s (Python %s) instead: the plugin may fail to install or run",
                    version,
                    fallback,
                    full,
                )
                return Interpreter(fallback, full, version, False)
        raise LookupError(f"no working Python interpreter found for Python {version}")

    async def _uv_managed_folder(self) -> Path | None:
        """Where uv keeps the Pythons it downloaded (``uv python dir``), or None."""
        if not self._uv_bin:
            return None
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                result = await anyio.run_process([str(self._uv_bin), "python", "dir"], env=env, cwd="/", check=False)
        except (OSError, TimeoutError):
            return None
        folder = result.stdout.decode(errors="replace").strip()
        return Path(folder) if result.returncode == 0 and folder else None

    async def _uv_find(self, version: str) -> str | None:
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                result = await anyio.run_process(
                    [str(self._uv_bin), "python", "find", "--system", "--no-project", version],
                    env=env,
                    check=False,
                )
        except (OSError, TimeoutError):
            return None
        path = result.stdout.decode(errors="replace").strip()
        return path if result.returncode == 0 and path else None


def _path_entries() -> list[str]:
    return [entry for entry in os.environ.get("PATH", os.defpath).split(os.pathsep) if entry]


def _pyenv_roots() -> list[Path]:
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    return roots


def _is_python(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@dataclass(frozen=True)
class Probe:
    version: str  # "3.12.1"
    in_venv: bool
    executable: str  # the real path (a pyenv shim resolves to the version it runs)

    def matches(self, version: str) -> bool:
        return not self.in_venv and ".".join(self.version.split(".")[:2]) == version


async def probe(path: str) -> Probe | None:
    """What the Python at ``path`` is, or None when it does not run."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            result = await anyio.run_process([path, "-I", "-c", _PROBE], check=False)
    except (OSError, TimeoutError):
        return None
    if result.returncode != 0:
        return None
    lines = result.stdout.decode(errors="replace").split("\n")
    if len(lines) < 3 or not re.fullmatch(r"\d+\.\d+\.\d+", lines[0].strip()):
        return None
    in_venv = lines[1].strip() == "1"
    executable = lines[2].strip()
    return Probe(lines[0].strip(), in_venv, path if in_venv or not executable else executable)
