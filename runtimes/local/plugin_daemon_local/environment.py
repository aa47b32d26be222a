"""A plugin's working folder and virtualenv: extract the package, build ``.venv`` with uv, mark it.

Layout (the Go daemon's)::

    {working_path}/{author}/{name}-{version}@{checksum}/      the extracted package (cwd of the plugin)
    {working_path}/{author}/{name}-{version}@{checksum}/.venv
    {working_path}/{author}/{name}-{version}@{checksum}/.venv/dify/plugin.json   marker
    {working_path}/.uv-cache                                                       shared uv cache

The marker holds the package checksum and the interpreter used; a venv whose marker matches is
never rebuilt (a daemon restart costs no install), and one without a matching marker is
deleted and rebuilt from scratch. Builds of one plugin are serialised, in this process by a
lock per identifier and across processes by ``flock`` on a lock file beside the folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
from plugin_daemon.config import Settings
from plugin_daemon.protocol.codecs import runner_protocol
from plugin_daemon.runtime import PluginSpec

from .commands import CommandResult, run_watched
from .envvars import uv_environment
from .install_sources import PackageSourceRefused, check_package_sources
from .interpreters import InterpreterFinder, probe
from .python_choice import NoSuitablePython, PythonChoice, choose_python
from .sandbox import Confinement, IsolationUnavailable, Sandbox

logger = logging.getLogger(__name__)

MARKER = Path(".venv/dify/plugin.json")
MARKER_FORMAT = 1
#: Characters kept from the install output in a failure message.
FAILURE_OUTPUT_CHARS = 4000
#: The warm-up, run in the plugin's folder: its own code compiled (not its venv: what the SDK
#: imports is compiled by importing it, the rest would cost disk in every environment), then the SDK.
WARM_UP_CODE = (
    "import compileall, re; compileall.compile_dir('.', quiet=1, rx=re.compile('/[.]venv(/|$)')); import dify_plugin"
)
#: Deadline of the ``import dify_plugin`` warm-up (it compiles the SDK's bytecode once).
WARMUP_TIMEOUT = 120.0
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

Progress = Callable[[str], None]


class EnvironmentBuildError(Exception):
    """The plugin's environment could not be prepared; the message says why (with uv's output)."""


@dataclass(frozen=True)
class PluginLayout:
    workdir: Path
    venv: Path
    python: Path
    marker: Path
    lock_file: Path

    @classmethod
    def for_identifier(cls, working_path: Path, identifier: str) -> PluginLayout:
        """``author/name:version@checksum`` → its folders; refuses anything that is not a plain name."""
        author, _, rest = identifier.partition("/")
        name_version, _, checksum = rest.partition("@")
        folder = f"{name_version.replace(':', '-')}@{checksum}"
        if not (_SAFE_PART.match(author) and _SAFE_PART.match(name_version.replace(":", "-")) and checksum):
            raise EnvironmentBuildError(f"invalid plugin identifier {identifier!r}")
        if not re.fullmatch(r"[A-Za-z0-9]+", checksum):
            raise EnvironmentBuildError(f"invalid checksum in plugin identifier {identifier!r}")
        workdir = working_path / author / folder
        venv = workdir / ".venv"
        return cls(workdir, venv, venv / "bin" / "python", workdir / MARKER, workdir.parent / f".{folder}.lock")


def find_uv(settings: Settings) -> str:
    """``UV_PATH``, else the binary of the ``uv`` package, else ``uv`` on PATH."""
    if settings.UV_PATH:
        return settings.UV_PATH
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentBuildError("uv not found: set UV_PATH or install the uv package")


def read_marker(layout: PluginLayout) -> dict[str, Any] | None:
    try:
        data = orjson.loads(layout.marker.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def marker_matches(layout: PluginLayout, checksum: str) -> bool:
    """True when the venv was built for this package and its interpreter still exists."""
    marker = read_marker(layout)
    return bool(marker and marker.get("checksum") == checksum and layout.python.exists())


def _summary(result: CommandResult) -> str:
    """uv's output without its ``-v`` DEBUG lines, shortened to its end."""
    lines = [line for line in result.output.splitlines() if not line.startswith("DEBUG ")]
    text = "\n".join(lines).strip() or result.output.strip()
    return text[-FAILURE_OUTPUT_CHARS:]


class EnvironmentBuilder:
    """Prepares working folders and venvs; one instance per runtime."""

    def __init__(
        self, settings: Settings, finder: InterpreterFinder | None = None, sandbox: Sandbox | None = None
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox or Sandbox(settings)
        self.working_path = settings.working_path
        self.cache_dir = self.working_path / ".uv-cache"
        self._uv: str | None = None
        self._finder = finder
        self._locks: dict[str, anyio.Lock] = {}

    @property
    def uv(self) -> str:
        if self._uv is None:
            self._uv = find_uv(self.settings)
        return self._uv

    @property
    def finder(self) -> InterpreterFinder:
        if self._finder is None:
            self._finder = InterpreterFinder(uv_bin=self.uv, configured=self.settings.PYTHON_INTERPRETER_PATH)
        return self._finder

    async def prepare(self, spec: PluginSpec, progress: Progress) -> PluginLayout:
        """Return the plugin's layout with a working venv, extracting and building what is missing."""
        layout = PluginLayout.for_identifier(self.working_path, spec.identifier)
        if runner_protocol(spec.declaration) is not None:
            return await self._prepare_without_venv(spec, layout, progress)
        language = ((spec.declaration.get("meta") or {}).get("runner") or {}).get("language", "python")
        if language != "python":
            raise EnvironmentBuildError(
                f"the local runtime runs Python plugins only; {spec.identifier} declares meta.runner.language "
                f"{language!r}"
            )
        lock = self._locks.setdefault(spec.identifier, anyio.Lock())
        async with lock:
            if marker_matches(layout, spec.checksum):
                return layout
            async with _file_lock(layout.lock_file, self.settings.PYTHON_ENV_INIT_HARD_TIMEOUT):
                if marker_matches(layout, spec.checksum):  # built by another process meanwhile
                    return layout
                if not _has_files(layout.workdir):
                    progress("extracting package")
                    await anyio.to_thread.run_sync(self._extract, spec, layout)
                choice = await self._choose_python(spec, layout)
                progress(
                    f"building environment with {choice.label} (uv)" + (f": {choice.reason}" if choice.reason else "")
                )
                await self._build(spec, layout, choice)
        return layout

    async def discard(self, identifier: str, layout: PluginLayout) -> None:
        """Remove the plugin's folder (package and environment), under the locks a build takes:
        a launch of it meanwhile waits, then finds nothing and builds again."""
        lock = self._locks.setdefault(identifier, anyio.Lock())
        async with lock, _file_lock(layout.lock_file, self.settings.PYTHON_ENV_INIT_HARD_TIMEOUT):
            if not layout.workdir.exists():
                return
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(layout.workdir, ignore_errors=True))
            if layout.workdir.exists():
                logger.warning("could not remove all of %s", layout.workdir)
            else:
                logger.info("removed %s (%s is neither installed nor being installed)", layout.workdir, identifier)

    async def _prepare_without_venv(self, spec: PluginSpec, layout: PluginLayout, progress: Progress) -> PluginLayout:
        """A plugin that brings its own program (``meta.runner.protocol``, any language): its
        folder is extracted, and no Python environment is built (nothing is installed for it)."""
        lock = self._locks.setdefault(spec.identifier, anyio.Lock())
        async with lock:
            if _has_files(layout.workdir):
                return layout
            async with _file_lock(layout.lock_file, self.settings.PYTHON_ENV_INIT_HARD_TIMEOUT):
                if not _has_files(layout.workdir):
                    progress("extracting package")
                    await anyio.to_thread.run_sync(self._extract, spec, layout)
        return layout

    # --- extraction ------------------------------------------------------------------------

    def _extract(self, spec: PluginSpec, layout: PluginLayout) -> None:
        from plugin_daemon.packages import PackageError, safe_extract

        if spec.package_path is None:
            raise EnvironmentBuildError(f"plugin {spec.identifier} has no package to extract")
        try:
            data = spec.package_path.read_bytes()
        except OSError as exc:
            raise EnvironmentBuildError(f"cannot read the package of {spec.identifier}: {exc}") from exc
        try:  # safe_extract stages beside the folder and renames: it appears whole or not at all
            safe_extract(
                data,
                layout.workdir,
                max_size=self.settings.MAX_PLUGIN_PACKAGE_SIZE,
                max_entries=self.settings.MAX_PLUGIN_PACKAGE_ENTRIES,
            )
        except (PackageError, OSError) as exc:
            raise EnvironmentBuildError(f"cannot extract the package of {spec.identifier}: {exc}") from exc

    # --- venv ------------------------------------------------------------------------------

    async def _choose_python(self, spec: PluginSpec, layout: PluginLayout) -> PythonChoice:
        try:
            choice = await choose_python(
                self.finder, spec.declaration, layout.workdir, downloads=self.settings.UV_PYTHON_DOWNLOADS
            )
        except NoSuitablePython as exc:
            raise EnvironmentBuildError(f"cannot build the environment of {spec.identifier}: {exc}") from exc
        logger.info(
            "%s: building with %s%s",
            spec.identifier,
            choice.python_argument,
            f" ({choice.reason})" if choice.reason else "",
        )
        return choice

    async def _build(self, spec: PluginSpec, layout: PluginLayout, choice: PythonChoice) -> None:
        started = time.monotonic()
        try:
            check_package_sources(layout.workdir, self.settings.PLUGIN_PACKAGE_INDEX_OPTIONS)
        except PackageSourceRefused as exc:
            raise EnvironmentBuildError(f"the dependencies of {spec.identifier} were not installed: {exc}") from None
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(layout.venv, ignore_errors=True))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        env = uv_environment(self.settings, layout.venv, self.cache_dir)
        self.sandbox.trust_interpreter(choice.python_argument)
        await self._uv_step(
            spec,
            layout,
            env,
            "creating the virtualenv",
            ["venv", str(layout.venv), "--python", choice.python_argument],
        )
        built_on = await probe(str(layout.python))
        version = built_on.version if built_on is not None else "unknown"
        await self._uv_step(spec, layout, env, "installing dependencies", self._install_args(layout))
        await self._warm_up(spec, layout)
        marker = {
            "format": MARKER_FORMAT,
            "checksum": spec.checksum,
            "identifier": spec.identifier,
            "python": version,
            "interpreter": choice.python_argument,
            "requested_python": choice.uv_request,
            "python_reason": choice.reason,
            "built_at": time.time(),
        }
        layout.marker.parent.mkdir(parents=True, exist_ok=True)
        temporary = layout.marker.with_suffix(".tmp")
        temporary.write_bytes(orjson.dumps(marker, option=orjson.OPT_INDENT_2))
        os.replace(temporary, layout.marker)
        logger.info(
            "built the environment of %s with Python %s in %.1f s",
            spec.identifier,
            version,
            time.monotonic() - started,
        )

    def _install_args(self, layout: PluginLayout) -> list[str]:
        settings = self.settings
        requirements = layout.workdir / "requirements.txt"
        pyproject = layout.workdir / "pyproject.toml"
        index: list[str] = []
        if settings.PIP_MIRROR_URL:
            index += ["--index-url", settings.PIP_MIRROR_URL]
        if settings.PIP_EXTRA_INDEX_URL:
            index += ["--extra-index-url", settings.PIP_EXTRA_INDEX_URL]
        extra = shlex.split(settings.PIP_EXTRA_ARGS) if settings.PIP_EXTRA_ARGS else []
        use_requirements = requirements.is_file() and (settings.PIP_MIRROR_URL or not pyproject.is_file())
        if use_requirements:
            return [
                "pip",
                "install",
                "-v",
                "--python",
                str(layout.python),
                "-r",
                str(requirements),
                *index,
                *extra,
            ]
        if pyproject.is_file():
            args = ["sync", "-v", "--no-dev", "--python", str(layout.python)]
            if (layout.workdir / "uv.lock").is_file() and not settings.PLUGIN_IGNORE_UV_LOCK:
                args.append("--frozen")
            else:
                extra = [arg for arg in extra if arg != "--frozen"]
            return [*args, *index, *extra]
        raise EnvironmentBuildError("neither pyproject.toml nor requirements.txt found in the plugin package")

    async def _uv_step(
        self, spec: PluginSpec, layout: PluginLayout, env: dict[str, str], what: str, args: list[str]
    ) -> None:
        settings = self.settings
        result = await run_watched(
            [self.uv, *args],
            cwd=layout.workdir,
            env=env,
            inactivity_timeout=settings.PYTHON_ENV_INIT_TIMEOUT,
            hard_timeout=settings.PYTHON_ENV_INIT_HARD_TIMEOUT,
            confinement=self._confine_install(layout),
        )
        if result.killed == "inactive":
            raise EnvironmentBuildError(
                f"{what} for {spec.identifier} was stopped: no output for {settings.PYTHON_ENV_INIT_TIMEOUT} s "
                f"(PYTHON_ENV_INIT_TIMEOUT); the package index may be unreachable. uv output:\n{_summary(result)}"
            )
        if result.killed == "hard":
            raise EnvironmentBuildError(
                f"{what} for {spec.identifier} was stopped after {settings.PYTHON_ENV_INIT_HARD_TIMEOUT} s "
                f"(PYTHON_ENV_INIT_HARD_TIMEOUT). uv output:\n{_summary(result)}"
            )
        if result.returncode != 0:
            raise EnvironmentBuildError(
                f"{what} for {spec.identifier} failed (uv exited with code {result.returncode}):\n{_summary(result)}"
            )

    def _confine_install(self, layout: PluginLayout) -> Confinement:
        try:
            return self.sandbox.confine_install(layout.workdir, self.cache_dir, self.uv)
        except (IsolationUnavailable, OSError) as exc:
            raise EnvironmentBuildError(f"cannot isolate the install: {exc}") from exc

    async def _warm_up(self, spec: PluginSpec, layout: PluginLayout) -> None:
        """Compile the plugin's own modules and import the SDK once, so that their bytecode is on disk
        before the first start: a plugin process cannot write there (its code is read-only to it), so
        whatever is not compiled now would be compiled again at every start."""
        result = await run_watched(
            [str(layout.python), "-c", WARM_UP_CODE],
            cwd=layout.workdir,
            env={"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", "/")},
            inactivity_timeout=WARMUP_TIMEOUT,
            hard_timeout=WARMUP_TIMEOUT,
            confinement=self._confine_install(layout),
        )
        if result.returncode != 0:
            logger.warning(
                "importing dify_plugin in the environment of %s failed (code %s): %s",
                spec.identifier,
                result.returncode,
                result.output[-FAILURE_OUTPUT_CHARS:],
            )


def _has_files(folder: Path) -> bool:
    try:
        return any(name != ".venv" for name in os.listdir(folder))
    except OSError:
        return False


class _file_lock:  # noqa: N801 - used like a function
    """``flock`` on ``path``, polled so that waiting stays cancellable; gives up after ``timeout``."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd = -1

    async def __aenter__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise EnvironmentBuildError(f"another process holds {self.path} for too long") from None
                await anyio.sleep(0.2)
            except BaseException:
                os.close(self.fd)
                raise

    async def __aexit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
