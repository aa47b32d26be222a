"""Which runtimes get a row of echo-tool figures, and how the benchmark reaches each one.

The local runtime's row is measured side by side with the same plugin process driven straight
over its pipes (see ``run.py``). Any other runtime gets the same figures through the daemon
(p50/p99 at 1 caller, throughput at 1/8/64), compared with that direct floor. To add one, give
its :class:`RuntimeRow` a ``connect``: an async context manager that, given the running
benchmark daemon, gets the ``echo_tool`` plugin answering on that runtime and yields the HTTP
request that calls its ``echo`` tool. A runtime that is not registered in this environment, or
has no ``connect`` yet, is skipped with a note.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from daemon_process import DaemonProcess
from loadgen import HttpTarget

Connect = Callable[[DaemonProcess], AbstractAsyncContextManager[HttpTarget]]


@dataclass(frozen=True)
class RuntimeRow:
    runtime: str  # the name the runtime registers under
    title: str
    connect: Connect | None = None  # None: no adapter yet, the row is skipped with a note


OTHER_RUNTIMES: tuple[RuntimeRow, ...] = (
    RuntimeRow("debug", "debug runtime (TCP)"),
    RuntimeRow("serverless", "serverless runtime (HTTP function)"),
)


def registered_runtimes() -> set[str]:
    """Runtimes the daemon would load here (entry points of the installed distributions)."""
    from plugin_daemon.plugins import load_extensions

    return set(load_extensions().runtime_factories())
