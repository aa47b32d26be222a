"""Measuring a plugin's process tree: children and grandchildren count, by /proc or by the process table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from plugin_daemon_local import memory

GRANDCHILD = "import sys, time; block = bytearray(40 * 2**20); print('ready', flush=True); time.sleep(60)"
CHILD = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {GRANDCHILD!r}])"


@pytest.mark.parametrize("from_proc", [True, False])
def test_tree_rss_counts_descendants(monkeypatch: pytest.MonkeyPatch, from_proc: bool) -> None:
    if from_proc and not memory._HAS_PROC_CHILDREN:
        pytest.skip("this kernel has no /proc/PID/task/PID/children")
    monkeypatch.setattr(memory, "_HAS_PROC_CHILDREN", from_proc)
    process = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"  # the grandchild holds its 40 MiB now
        measured = memory.tree_rss([process.pid])[process.pid]
        assert measured >= 40 * memory.MiB
        assert memory.tree_rss([]) == {}
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
