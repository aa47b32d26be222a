"""Run a real daemon (uvicorn on a loopback port) in a background thread, for tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

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


class AppServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread; ``client`` speaks to it."""

    def __init__(self, app: Any, name: str, headers: dict[str, str], *, port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"{name}-under-test", daemon=True)
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def start(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + START_DEADLINE
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the {self.name} under test exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {self.name} under test did not start in time")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            raise RuntimeError(f"the {self.name} under test did not stop within 30 s")


class DaemonServer(AppServer):
    """A daemon serving HTTP on 127.0.0.1; ``client`` speaks to it with the server key."""

    def __init__(
        self, settings: Settings, extensions: ExtensionManager | None = None, *, port: int | None = None
    ) -> None:
        self.settings = settings
        self.daemon = Daemon(settings, extensions)
        super().__init__(create_app(self.daemon), "daemon", {"X-Api-Key": settings.SERVER_KEY}, port=port)


@contextmanager
def running_daemon(
    settings: Settings, extensions: ExtensionManager | None = None, *, port: int | None = None
) -> Iterator[DaemonServer]:
    server = DaemonServer(settings, extensions, port=port).start()
    try:
        yield server
    finally:
        server.stop()
