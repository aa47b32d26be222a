"""The daemon's own protections, applied at start: umask, data-folder permissions, open files, dumpability.

- ``umask 077``: whatever the daemon creates is its own alone (plugin folders are opened up
  explicitly by the local runtime's sandbox, and uv runs with ``022``);
- the data folder gives nobody else anything: ``0700``, or traverse-only ``0711`` where a
  plugin under another uid must walk through it to its code; the database and the key file
  ``0600``; folders made by an older version are tightened;
- ``PR_SET_DUMPABLE 0`` (``DAEMON_NON_DUMPABLE``): processes of the daemon's uid cannot ptrace it
  or read its ``/proc`` entries (environ holds its secrets). Tools that attach to the daemon
  (py-spy) then need root or ``CAP_SYS_PTRACE``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from pathlib import Path

from plugin_daemon.config import Settings

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
UMASK = 0o077
#: The generated server key, kept in the data folder.
KEY_FILE = "server_key"


def set_non_dumpable() -> bool:
    """Make this process non-dumpable; False where the platform does not allow it."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    return bool(libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 and libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)


def harden_process(settings: Settings) -> str:
    """What ``plugin-daemon serve`` does to itself before anything else; returns what it did, to log."""
    os.umask(UMASK)
    dumpable = "left dumpable (DAEMON_NON_DUMPABLE=false)"
    if settings.DAEMON_NON_DUMPABLE:
        dumpable = "non-dumpable" if set_non_dumpable() else "dumpable (PR_SET_DUMPABLE is not available)"
    return f"umask {UMASK:03o}, {dumpable}"


def _chmod(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if (path.stat().st_mode & 0o7777) != mode:
            path.chmod(mode)


def secure_data_folder(settings: Settings) -> None:
    """Tighten the data folder, its state folders, the SQLite database and the key file."""
    home = settings.home
    working = settings.working_path
    # plugins under another uid (a root daemon) walk through home to their code; nothing else does
    traverse = os.geteuid() == 0 and settings.PLUGIN_ISOLATION != "off"
    if traverse:  # made now, or the local runtime makes it later under the umask, closed to plugins
        working.mkdir(parents=True, exist_ok=True)
    _chmod(home, 0o711 if traverse and home in working.parents else 0o700)
    _chmod(working, 0o711 if traverse else 0o700)
    for folder in (settings.installed_path, settings.package_path, settings.media_path, settings.persistence_path):
        _chmod(folder, 0o700)
    _chmod(home / KEY_FILE, 0o600)
    database = settings.database_url
    if database.startswith("sqlite:///"):
        path = Path(database.removeprefix("sqlite:///").partition("?")[0])
        for suffix in ("", "-wal", "-shm", "-journal"):
            _chmod(path.with_name(path.name + suffix), 0o600)
