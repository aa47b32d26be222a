"""Truthful shutdown: on SIGTERM (or SIGINT) the daemon stops taking calls, lets the calls in flight
finish within ``SERVER_SHUTDOWN_GRACE_PERIOD``, ends the rest with an error event, and exits.

Idle live streams (``/debugging/logs``) end the moment shutdown begins, and the debug listener
stops accepting first (:meth:`Shutdown.on_begin`), so a stop with streams open is quick.

A call that is cut never ends like a complete one: its answer gets a "daemon shutting down" error
event before the end of the response, so Dify reports a failure instead of taking a truncated
answer for a whole one.

:class:`Shutdown` is the daemon's side (which calls are running, and cutting them);
:class:`GracefulServer` is uvicorn's server with the grace period in front of its own shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from anyio import CancelScope

from plugin_daemon.errors import DaemonError, InternalError

log = logging.getLogger(__name__)

#: Seconds uvicorn waits, after the cut, for the cut answers to be written before it cancels what is left.
CUT_WRITE_MARGIN = 3.0


class ShuttingDown(InternalError):
    """What a call gets when the daemon stops before the call has ended."""


class Shutdown:
    """The daemon's calls in flight and the shutdown that may cut them.

    A call registers the cancel scope that bounds it (:meth:`track`); :meth:`cut` cancels every
    registered scope, and the call then reports :meth:`error` instead of its own timeout.
    """

    __slots__ = ("draining", "cutting", "_calls", "_waits", "_on_begin")

    def __init__(self) -> None:
        #: SIGTERM came: new calls are refused
        self.draining = False
        #: the grace period is over: calls still running are being ended with an error
        self.cutting = False
        self._calls: set[CancelScope] = set()
        self._waits: set[CancelScope] = set()
        self._on_begin: list[Callable[[], None]] = []

    def on_begin(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (in the event loop) the moment shutdown begins, before anything else
        stops: the debug listener stops accepting new plugins then."""
        self._on_begin.append(callback)

    @contextmanager
    def waiting(self, scope: CancelScope) -> Iterator[None]:
        """An idle wait that shutdown ends at once (a live log stream waiting for its next line):
        ``scope`` is cancelled when shutdown begins; the waiter then sees :attr:`draining` and ends."""
        self._waits.add(scope)
        if self.draining:
            scope.cancel()
        try:
            yield
        finally:
            self._waits.discard(scope)

    def track(self, scope: CancelScope) -> None:
        self._calls.add(scope)
        if self.cutting:
            scope.cancel()

    def untrack(self, scope: CancelScope) -> None:
        self._calls.discard(scope)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    def begin(self) -> None:
        self.draining = True
        for callback in self._on_begin:
            try:
                callback()
            except Exception:  # the shutdown goes on whatever one callback does
                log.exception("a shutdown callback failed")
        for scope in list(self._waits):
            scope.cancel()

    def cut(self) -> None:
        self.cutting = True
        if self._calls:
            log.warning("ending %d call(s) still running after the shutdown grace period", len(self._calls))
        for scope in list(self._calls):
            scope.cancel()

    @staticmethod
    def error() -> DaemonError:
        return ShuttingDown("daemon shutting down: the call was stopped before it ended")

    @staticmethod
    def refusal() -> DaemonError:
        return ShuttingDown("daemon shutting down: not taking new calls", http_status=503)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, whose shutdown first gives calls in flight ``grace_period`` seconds.

    uvicorn closes the listening sockets and every idle connection at once, and lets busy
    connections finish their response without keep-alive. When the grace period is over, the
    calls still running are cut (:meth:`Shutdown.cut`); uvicorn cancels whatever is left
    ``CUT_WRITE_MARGIN`` seconds later, then runs the lifespan's shutdown (plugins are stopped).
    """

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown, grace_period: float) -> None:
        config.timeout_graceful_shutdown = int(grace_period + CUT_WRITE_MARGIN + 0.999)
        super().__init__(config)
        self.drain = shutdown
        self.grace_period = grace_period

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.drain.begin()
        if self.drain.in_flight:
            log.info(
                "shutting down: %d call(s) in flight get %g s to finish (SERVER_SHUTDOWN_GRACE_PERIOD)",
                self.drain.in_flight,
                self.grace_period,
            )
        cutter = asyncio.get_running_loop().call_later(self.grace_period, self.drain.cut)
        try:
            await super().shutdown(sockets)
        finally:
            cutter.cancel()


def serve_until_stopped(app: Any, shutdown: Shutdown, grace_period: float, **config: Any) -> None:
    """Run ``app`` with uvicorn (``config`` are ``uvicorn.Config`` options) until SIGTERM or SIGINT."""
    GracefulServer(uvicorn.Config(app, **config), shutdown, grace_period).run()
