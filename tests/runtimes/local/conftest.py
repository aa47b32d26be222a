"""Fixtures for the local runtime: real packages of tests/plugins, venvs built once and kept.

The working path (venvs and uv cache) lives in ``$PLUGIN_DAEMON_TEST_CACHE/local-runtime``
(default ``~/.cache/plugin-daemon-tests``) and survives test runs: the venv marker makes every
run after the first skip the install.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from plugin_daemon.runtime import PluginSpec
from plugin_daemon_local.environment import EnvironmentBuilder

from tests.runtimes.local.local_runtime_support import BUILD_TIMEOUT, PLUGINS, make_settings, package_spec


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("packages")


@pytest.fixture(scope="session")
def specs(package_dir: Path) -> Callable[[str], PluginSpec]:
    """``specs(name)``: the PluginSpec of ``tests/plugins/<name>`` packaged as a .difypkg."""
    cache: dict[str, PluginSpec] = {}

    def get(name: str) -> PluginSpec:
        if name not in cache:
            cache[name] = package_spec(PLUGINS / name, package_dir)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def prepared(
    specs: Callable[[str], PluginSpec], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], PluginSpec]:
    """``prepared(name)``: the spec, with its venv built in the shared working path (once).

    Callable from async tests: the build runs its own event loop in a worker thread.
    """
    done: set[str] = set()
    settings = make_settings(tmp_path_factory.mktemp("prepare-home"))
    builder = EnvironmentBuilder(settings)

    def get(name: str) -> PluginSpec:
        spec = specs(name)
        if name not in done:

            async def build() -> None:
                with anyio.fail_after(BUILD_TIMEOUT):
                    await builder.prepare(spec, lambda line: None)

            with ThreadPoolExecutor(1) as pool:
                pool.submit(anyio.run, build).result()
            done.add(name)
        return spec

    return get
