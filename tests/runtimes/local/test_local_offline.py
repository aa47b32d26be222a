"""An air-gapped install: a package that carries its own wheels builds with no package index.

This is how operators without internet access repackage plugins: the wheels of every dependency in
``wheels/`` inside the package, and a ``requirements.txt`` that says ``--no-index`` and
``--find-links=./wheels/``. The daemon's configured index here is a loopback port that counts
connections and closes them: the build must succeed without a single one.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from plugin_daemon_local import LocalRuntime
from plugin_daemon_local.interpreters import InterpreterFinder
from uv import find_uv_bin

from tests.runtimes.local.local_runtime_support import (
    BUILD_TIMEOUT,
    CACHE,
    PLUGINS,
    invoke,
    make_settings,
    package_spec,
    texts,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@dataclass
class RefusingIndex:
    url: str
    connections: int = 0


@pytest.fixture
async def refusing_index() -> AsyncIterator[RefusingIndex]:
    """A loopback "package index" that counts connections and closes each at once."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    index = RefusingIndex(f"http://127.0.0.1:{listener.extra(SocketAttribute.local_port)}/simple")

    async def refuse(stream: SocketStream) -> None:
        index.connections += 1
        await stream.aclose()

    async with anyio.create_task_group() as group:
        group.start_soon(listener.serve, refuse)
        yield index
        group.cancel_scope.cancel()
    await listener.aclose()


@pytest.fixture(scope="module")
def wheelhouse() -> Path:
    """The wheels of echo_tool's requirements for its Python, downloaded once by pip and kept."""
    requirements = PLUGINS / "echo_tool" / "requirements.txt"
    python = anyio.run(InterpreterFinder(uv_bin=find_uv_bin()).find, "3.11")
    if not python.matches:
        pytest.fail(f"echo_tool needs Python 3.11, found only {python.version}")
    folder = CACHE / "wheelhouse" / f"py{python.version}" / requirements.read_text().strip().replace("=", "-")
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        done = subprocess.run(
            [python.path, "-m", "pip", "download", "--only-binary=:all:", "-d", str(folder), "-r", str(requirements)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        if done.returncode != 0:
            pytest.fail(f"pip could not download the wheels of {requirements}:\n{done.stdout}\n{done.stderr}")
        (folder / ".complete").touch()
    return folder


async def test_a_package_carrying_its_wheels_installs_without_any_index(
    tmp_path: Path, wheelhouse: Path, refusing_index: RefusingIndex
) -> None:
    folder = tmp_path / "echo_tool"
    shutil.copytree(PLUGINS / "echo_tool", folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(wheelhouse, folder / "wheels", ignore=shutil.ignore_patterns(".complete"))
    original = (folder / "requirements.txt").read_text()
    (folder / "requirements.txt").write_text("--no-index\n--find-links=./wheels/\n" + original)
    packages = tmp_path / "packages"
    packages.mkdir()
    spec = package_spec(folder, packages)
    # a fresh working path and uv cache: nothing built or cached before can help
    settings = make_settings(tmp_path / "home", PLUGIN_WORKING_PATH=tmp_path / "cwd", PIP_MIRROR_URL=refusing_index.url)
    async with LocalRuntime(settings) as runtime:
        with anyio.fail_after(BUILD_TIMEOUT):
            await runtime.ensure_ready(spec, timeout=BUILD_TIMEOUT)
        events = await invoke(runtime, spec, "echo", {"text": "offline"})
    assert texts(events) == ["offline"]
    assert refusing_index.connections == 0
