"""pytest-plugin-daemon: test a Dify plugin folder through a real plugin-daemon and its local runtime.

The fixtures live in :mod:`pytest_plugin_daemon.plugin` (loaded by pytest through the ``pytest11``
entry point); tests use the client and the exceptions exported here.
"""

from __future__ import annotations

from pytest_plugin_daemon.client import PluginClient
from pytest_plugin_daemon.errors import PluginCallError, PluginInstallError, PluginTestingError

__all__ = ["PluginCallError", "PluginClient", "PluginInstallError", "PluginTestingError"]
