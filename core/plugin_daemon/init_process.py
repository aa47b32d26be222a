"""A minimal init for when ``plugin-daemon serve`` is PID 1 (a container without tini).

The ``dify_plugin`` SDK takes a parent PID of 1 to mean that its parent died, and exits. So when
the daemon finds itself PID 1 it forks: the child runs the daemon (its plugins see the child as
their parent), and PID 1 stays behind as an init: it forwards the signals a container runtime
sends to the child, reaps every process that ends up orphaned in the namespace, and exits with
the daemon's status when the daemon has ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType

#: signals PID 1 passes on to the daemon (SIGKILL and SIGSTOP cannot be caught)
FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


def become_init_if_pid_1() -> None:
    """Return at once in the process that should run the daemon; as PID 1, never return."""
    if os.getpid() != 1:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        return  # the daemon: PID 1 is now its parent, which the SDK's check never sees
    os._exit(_supervise(child))


def _supervise(child: int) -> int:
    def forward(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(ProcessLookupError):  # it has just ended
            os.kill(child, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)  # any process: orphans are ours to reap
        except ChildProcessError:
            return 1  # the daemon vanished without a status (cannot happen to a direct child)
        if pid == child:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
