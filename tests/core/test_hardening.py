"""The data folder is tightened when the daemon is built: on a first start, and over what an older
version left open."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from plugin_daemon.config import Settings
from plugin_daemon.daemon import Daemon
from plugin_daemon.hardening import KEY_FILE


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@pytest.mark.parametrize("first_start", [True, False])
def test_the_data_folder_gives_nobody_else_anything(
    make_settings: Callable[..., Settings], tmp_path: Path, first_start: bool
) -> None:
    settings = make_settings(PLUGIN_DAEMON_HOME=tmp_path / "home")
    home = settings.home
    if not first_start:  # what an older version left: world-readable folders and files
        for folder in (home, settings.working_path, settings.package_path, settings.persistence_path):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)
        (home / KEY_FILE).write_text("key")
        (home / KEY_FILE).chmod(0o644)
    daemon = Daemon(settings)
    try:
        # as root, plugins under their own uid walk through the root and the working folder to
        # their code: traverse-only, never readable
        shared = 0o711 if os.geteuid() == 0 else 0o700
        assert mode(home) == shared
        assert mode(settings.working_path) == shared
        assert mode(home / "plugin_daemon.db") == 0o600
        for folder in (settings.package_path, settings.persistence_path):
            if folder.exists():
                assert mode(folder) == 0o700
        if not first_start:
            assert mode(home / KEY_FILE) == 0o600
    finally:
        daemon.database.dispose()
