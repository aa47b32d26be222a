"""A real daemon in this process: uvicorn on a free 127.0.0.1 port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Self

import httpx
import uvicorn
from plugin_daemon.api.app import create_app
from plugin_daemon.daemon import Daemon

if TYPE_CHECKING:
    from plugin_daemon.config import Settings

#: seconds the daemon has to start (database, runtimes) and to stop (plugin processes included)
START_DEADLINE = 60.0
STOP_DEADLINE = 60.0


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class DaemonServer:
    """The daemon's HTTP API on ``url``; ``client`` speaks to it with the server key.

    The settings' ``SERVER_HOST``/``SERVER_PORT`` are not used: it always listens on 127.0.0.1 and a
    free port.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon = Daemon(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.daemon), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="plugin-daemon-under-test", daemon=True)
        self.client = httpx.Client(base_url=self.url, headers={"X-Api-Key": settings.SERVER_KEY}, timeout=60)

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + START_DEADLINE
        interval = 0.005
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("plugin-daemon exited during start-up (its log above says why)")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"plugin-daemon did not start within {START_DEADLINE:.0f} s")
            time.sleep(interval)  # polling a flag with a deadline; uvicorn offers no event to wait on
            interval = min(interval * 2, 0.1)
        return self

    def stop(self) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=STOP_DEADLINE)
        if self._thread.is_alive():
            raise RuntimeError(f"plugin-daemon did not stop within {STOP_DEADLINE:.0f} s")
