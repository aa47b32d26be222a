"""The pytest side: options and the ``dify_plugin_daemon``, ``dify_plugin`` and ``dify_daemon_settings`` fixtures.

Loaded through the ``pytest11`` entry point. plugin-daemon itself is imported only when a test asks
for one of the fixtures, so a test session that uses none does not pay for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_plugin_daemon.client import PluginClient
    from pytest_plugin_daemon.server import DaemonServer

#: seconds an install may take beyond the daemon's own PLUGIN_INSTALL_TIMEOUT before the test gives up
INSTALL_MARGIN = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("plugin-daemon", "Dify plugins through plugin-daemon (pytest-plugin-daemon)")
    group.addoption(
        "--dify-plugin-cache",
        dest="dify_plugin_cache",
        default=None,
        metavar="PATH",
        help="plugin working path (extracted plugins and their environments), kept between runs; "
        "default: $PYTEST_PLUGIN_DAEMON_CACHE, the ini option dify_plugin_cache, ~/.cache/pytest-plugin-daemon",
    )
    parser.addini(
        "dify_plugin_cache",
        type="string",
        default="",
        help="plugin working path kept between runs (default ~/.cache/pytest-plugin-daemon)",
    )
    parser.addini(
        "dify_daemon_settings",
        type="linelist",
        default=[],
        help="plugin-daemon settings for the test daemon, one NAME=value a line (e.g. DIFY_INNER_API_URL=...)",
    )


@pytest.fixture(scope="session")
def dify_daemon_settings(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Settings of the test daemon (names as in plugin-daemon's configuration); override in a conftest.py.

    Default: the ini option ``dify_daemon_settings``.
    """
    from pytest_plugin_daemon.settings import parse_setting_lines

    try:
        return dict(parse_setting_lines(pytestconfig.getini("dify_daemon_settings")))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def dify_plugin_daemon(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, dify_daemon_settings: dict[str, Any]
) -> Iterator[DaemonServer]:
    """A real plugin-daemon for the test session, on 127.0.0.1 and a free port, running plugins locally."""
    from pytest_plugin_daemon.server import DaemonServer
    from pytest_plugin_daemon.settings import cache_path, daemon_settings

    working_path = cache_path(pytestconfig.getoption("dify_plugin_cache"), pytestconfig.getini("dify_plugin_cache"))
    try:
        settings = daemon_settings(tmp_path_factory.mktemp("plugin-daemon-home"), working_path, dify_daemon_settings)
    except ValueError as exc:  # a pydantic ValidationError is a ValueError too
        raise pytest.UsageError(f"pytest-plugin-daemon: {exc}") from None
    server = DaemonServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dify_plugin(dify_plugin_daemon: DaemonServer, pytestconfig: pytest.Config) -> Callable[..., PluginClient]:
    """``dify_plugin(folder)``: package the plugin folder, install it and return a :class:`PluginClient`.

    A relative ``folder`` is taken from pytest's rootdir. Each call installs into a new workspace
    (tenant) unless ``tenant`` is given, so plugin storage starts empty; the plugin's process and
    environment are shared by every install of the same package.
    """
    from pytest_plugin_daemon.client import PluginClient
    from pytest_plugin_daemon.installing import install_folder

    def install(
        folder: str | Path,
        *,
        tenant: str | None = None,
        user_id: str = "pytest-user",
        install_timeout: float | None = None,
        call_timeout: float = 120.0,
    ) -> PluginClient:
        __tracebackhide__ = True
        path = Path(folder)
        if not path.is_absolute():
            path = pytestconfig.rootpath / path
        tenant = tenant or str(uuid.uuid4())
        timeout = install_timeout or dify_plugin_daemon.settings.install_timeout_seconds + INSTALL_MARGIN
        installed = install_folder(dify_plugin_daemon.client, path, tenant, timeout=timeout)
        return PluginClient(
            dify_plugin_daemon.client,
            tenant=tenant,
            identifier=installed.identifier,
            plugin_id=installed.plugin_id,
            declaration=installed.declaration,
            user_id=user_id,
            timeout=call_timeout,
        )

    return install
