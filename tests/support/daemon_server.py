"""Run a real daemon (uvicorn on a loopback port) in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from plugin_daemon.api.app import create_app
from plugin_daemon.config import Settings
from plugin_daemon.daemon import Daemon
from plugin_daemon.plugins import ExtensionManager

START_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DaemonServer:
    """A daemon serving HTTP on 127.0.0.1; ``client`` speaks to it with the server key."""

    def __init__(
        self, settings: Settings, extensions: ExtensionManager | None = None, *, port: int | None = None
    ) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.daemon = Daemon(settings, extensions)
        config = uvicorn.Config(
            create_app(self.daemon), host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="daemon-under-test", daemon=True)
        self.client = httpx.Client(base_url=self.url, headers={"X-Api-Key": settings.SERVER_KEY}, timeout=60)

    def start(self) -> DaemonServer:
        self.thread.start()
        deadline = time.monotonic() + START_DEADLINE
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the daemon under test exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the daemon under test did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError("the daemon under test did not stop within 30 s")


@contextmanager
def running_daemon(
    settings: Settings, extensions: ExtensionManager | None = None, *, port: int | None = None
) -> Iterator[DaemonServer]:
    server = DaemonServer(settings, extensions, port=port).start()
    try:
        yield server
    finally:
        server.stop()
