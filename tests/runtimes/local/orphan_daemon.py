"""A tiny daemon for the orphan test: launches one plugin with LocalRuntime, prints pids, waits.

``python orphan_daemon.py daemon <spec.json>``: run the runtime; print ``{"daemon": pid, "plugin": pid}``.
``python orphan_daemon.py reaper <spec.json>``: become a child subreaper, run the daemon mode as
a child, and reap whatever is re-parented to us (so an orphan is NOT adopted by pid 1 and the
SDK's own ``getppid() == 1`` check cannot fire).
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import anyio

PR_SET_CHILD_SUBREAPER = 36


def daemon(spec_file: str) -> None:
    from plugin_daemon.config import Settings
    from plugin_daemon.runtime import PluginSpec
    from plugin_daemon_local import LocalRuntime

    raw = json.loads(Path(spec_file).read_text())
    settings = Settings(_env_file=None, **raw["settings"])  # type: ignore[call-arg]
    spec = PluginSpec(
        identifier=raw["identifier"],
        plugin_id=raw["plugin_id"],
        checksum=raw["checksum"],
        declaration=raw["declaration"],
        package_path=Path(raw["package_path"]),
    )

    async def main() -> None:
        async with LocalRuntime(settings) as runtime:
            await runtime.ensure_ready(spec, timeout=120)
            pid = runtime.health()["plugins"][spec.identifier]["pid"]
            print(json.dumps({"daemon": os.getpid(), "plugin": pid}), flush=True)
            await anyio.sleep_forever()

    anyio.run(main)


def reaper(spec_file: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    subprocess.Popen([sys.executable, __file__, "daemon", spec_file])
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


if __name__ == "__main__":
    {"daemon": daemon, "reaper": reaper}[sys.argv[1]](sys.argv[2])
