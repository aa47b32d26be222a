"""``plugin-daemon serve`` as PID 1 of a fresh PID namespace (as in a container without an init).

``unshare --pid --fork --mount-proc`` makes the daemon PID 1 of a new namespace with its own
/proc; the network is the host's, so the daemon answers on loopback.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.waiting import wait_for

#: the daemon's settings that tests set themselves; the rest of the environment is the test's
OWN_PREFIXES = ("SERVER_", "PLUGIN_", "DB_", "LOG_", "DIFY_", "PROMETHEUS_", "FORCE_", "THIRD_PARTY_", "REDIS_")


def unshare_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def require_unshare() -> None:
    if not unshare_available():
        pytest.fail("these tests need `unshare --pid --fork --mount-proc` (root, or user namespaces)")


class NamespacedDaemon:
    """The daemon as PID 1 of its own PID namespace; its output goes to ``log_path``."""

    def __init__(self, environ: dict[str, str], log_path: Path, cwd: Path, *, init: tuple[str, ...] = ()) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(OWN_PREFIXES)}
        self.environ = {**base, **environ}
        self.port = int(environ["SERVER_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cwd = cwd
        #: a command that runs as PID 1 in front of the daemon (the image's ``tini -g --``); none = the daemon is PID 1
        self.init = init
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> NamespacedDaemon:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    *("unshare", "--pid", "--fork", "--mount-proc"),
                    *self.init,
                    *(sys.executable, "-m", "plugin_daemon.cli", "serve"),
                ],
                env=self.environ,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(lambda: self.healthy() or self.process.poll() is not None, timeout, "the daemon to answer")  # type: ignore[union-attr]
        if self.process.poll() is not None:
            raise AssertionError(f"the daemon exited during start:\n{self.log_path.read_text()[-4000:]}")
        return self

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/check", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def init_pid(self) -> int:
        """The host's PID of the namespace's PID 1 (the child unshare forked)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        assert len(children) == 1, children
        return int(children[0])

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM to PID 1, as ``docker stop`` does; the exit status of the namespace."""
        assert self.process is not None
        if self.process.poll() is None:
            os.kill(self.init_pid(), signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise AssertionError(f"the daemon did not stop within {timeout} s") from None
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def namespace_pids(host_pid: int) -> list[int]:
    """A process's PIDs from the host's namespace inwards (the NSpid line of /proc/PID/status)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(part) for part in line.split()[1:]]
    raise AssertionError(f"no NSpid for {host_pid}")


def descendants(host_pid: int) -> list[int]:
    found: list[int] = []
    pending = [host_pid]
    while pending:
        pid = pending.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            pending.append(child)
    return found
