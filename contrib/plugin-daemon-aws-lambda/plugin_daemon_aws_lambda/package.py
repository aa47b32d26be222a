"""The Lambda deployment package of a plugin: a zip built with uv for Lambda's platform, no Docker.

Layout of the zip (unpacked by Lambda into ``/var/task``)::

    bootstrap                the exec wrapper (AWS_LAMBDA_EXEC_WRAPPER): starts dify_lambda_runtime.py
    dify_lambda_runtime.py   the Runtime API loop that streams the plugin's frames (function_runtime.py)
    plugin/                  the .difypkg, unpacked
    python/                  the plugin's requirements, installed with
                             ``uv pip install --target python --python-platform <arch>-manylinux2014
                             --python-version X.Y --only-binary :all:``

Only wheels are used (a source build would run on this machine's platform, not Lambda's).
Entries get a fixed timestamp, so one package and one platform always give the same zip.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
from plugin_daemon.packages.extract import safe_extract
from plugin_daemon_local.install_sources import PackageSourceRefused, check_package_sources

from . import function_runtime

ARCHITECTURES = {"x86_64": "x86_64", "arm64": "aarch64"}
BOOTSTRAP = """#!/bin/sh
# AWS_LAMBDA_EXEC_WRAPPER: run the plugin under this package's streaming runtime loop
# instead of the managed runtime's own ("$@"), which would buffer the answer.
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")}"
exec "$(command -v python3 || command -v python)" "${LAMBDA_TASK_ROOT:-$(dirname "$0")}/dify_lambda_runtime.py"
"""
ZIP_TIME = (2020, 1, 1, 0, 0, 0)
#: How much of uv's output is kept for the error of a failed build.
OUTPUT_KEEP = 4000


class PackageBuildError(Exception):
    """The deployment package could not be built; the message says why (uv's output included)."""


@dataclass(frozen=True)
class Platform:
    runtime: str  # python3.12
    architecture: str  # x86_64 | arm64

    @property
    def python_version(self) -> str:
        if not self.runtime.startswith("python"):
            raise PackageBuildError(f"AWS_LAMBDA_RUNTIME {self.runtime!r} is not a Python runtime (like python3.12)")
        return self.runtime.removeprefix("python")

    @property
    def python_platform(self) -> str:
        try:
            return f"{ARCHITECTURES[self.architecture]}-manylinux2014"
        except KeyError:
            raise PackageBuildError(
                f"AWS_LAMBDA_ARCHITECTURE {self.architecture!r} is not one of {', '.join(ARCHITECTURES)}"
            ) from None


def requirement_args(plugin: Path) -> list[str]:
    if (plugin / "requirements.txt").is_file():
        return ["-r", str(plugin / "requirements.txt")]
    if (plugin / "pyproject.toml").is_file():
        return ["-r", str(plugin / "pyproject.toml")]
    raise PackageBuildError("the plugin has neither requirements.txt nor pyproject.toml")


def uv_install_command(uv: str, plugin: Path, target: Path, platform: Platform) -> list[str]:
    return [
        uv,
        "pip",
        "install",
        "--target",
        str(target),
        "--python-platform",
        platform.python_platform,
        "--python-version",
        platform.python_version,
        "--only-binary",
        ":all:",
        "--no-config",
        *requirement_args(plugin),
    ]


def write_zip(root: Path, destination: Path) -> None:
    """Zip ``root`` into ``destination`` (atomically), keeping the executable bits, with fixed times."""
    temporary = destination.with_suffix(".zip.tmp")
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for folder, folders, files in os.walk(root):
            folders.sort()
            for name in sorted(files):
                path = Path(folder) / name
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), ZIP_TIME)
                mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    os.replace(temporary, destination)


async def build_deployment_package(
    package: bytes,
    entrypoint: str,
    destination: Path,
    *,
    uv: str,
    platform: Platform,
    progress: Callable[[str], None] = lambda line: None,
) -> Path:
    """Build the zip of ``package`` for ``platform`` at ``destination`` (kept: a second call reuses it)."""
    if destination.is_file():
        progress(f"reusing {destination.name}")
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=destination.parent))
    try:
        root = work / "root"
        root.mkdir()
        await anyio.to_thread.run_sync(safe_extract, package, root / "plugin")
        (root / "plugin" / "dify_lambda_entrypoint").write_text(entrypoint + "\n")
        try:  # the same rule as local installs: no package index of the package's choosing
            check_package_sources(root / "plugin", "local")
        except PackageSourceRefused as exc:
            raise PackageBuildError(str(exc)) from exc
        command = uv_install_command(uv, root / "plugin", root / "python", platform)
        progress(f"uv pip install for {platform.python_platform}, Python {platform.python_version}")
        result = await anyio.run_process(command, check=False, stderr=-2)  # stderr into stdout
        output = result.stdout.decode(errors="replace")
        if result.returncode != 0:
            raise PackageBuildError(f"uv pip install failed (exit {result.returncode}):\n{output[-OUTPUT_KEEP:]}")
        shutil.copyfile(function_runtime.__file__, root / "dify_lambda_runtime.py")
        (root / "bootstrap").write_text(BOOTSTRAP)
        (root / "bootstrap").chmod(0o755)
        await anyio.to_thread.run_sync(write_zip, root, destination)
        progress(f"{destination.name}: {destination.stat().st_size} bytes")
        return destination
    finally:
        await anyio.to_thread.run_sync(shutil.rmtree, work, True)
