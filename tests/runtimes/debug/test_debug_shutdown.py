"""SIGTERM with idle live-log streams open: the daemon stops well under a second, each stream ends
cleanly, the debug listener stops accepting first, and nothing prints a traceback."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.daemon_process import DaemonProcess

pytestmark = pytest.mark.anyio

STREAMS = 3


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def follow_until_live(client: httpx.AsyncClient, live: asyncio.Event, lines: list[str]) -> None:
    """Follow a plugin's live log; set ``live`` once the stream says it is live; read to its end."""
    params = {"plugin_id": "tester/echo_tool", "follow": "true"}
    async with client.stream("GET", "/plugin/tenant-1/debugging/logs", params=params) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line == ": live":
                live.set()


def refuses(address: tuple[str, int]) -> bool:
    try:
        socket.create_connection(address, timeout=1).close()
    except OSError:
        return True
    return False


async def test_a_stop_with_idle_log_streams_open_is_quick_and_quiet(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home", tmp_path / "work", env={"LOG_LEVEL": "INFO"}).start()
    try:
        await daemon.wait_http()
        host, port = (await daemon.health())["runtimes"]["remote"]["listening"].rsplit(":", 1)
        listener = (host, int(port))
        assert not refuses(listener)
        async with daemon.client(timeout=30) as client:
            lives = [asyncio.Event() for _ in range(STREAMS)]
            lines: list[list[str]] = [[] for _ in range(STREAMS)]
            streams = [asyncio.create_task(follow_until_live(client, *pair)) for pair in zip(lives, lines, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(live.wait() for live in lives)), 30)

            signalled = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            # every stream ends by itself, cleanly (no reset, no error)
            await asyncio.wait_for(asyncio.gather(*streams), 5)
            exit_code = await asyncio.to_thread(daemon.process.wait, 10)  # type: ignore[union-attr]
            stopped_after = time.monotonic() - signalled
    finally:
        daemon.stop()
    log = daemon.log_path.read_text()
    assert exit_code in (0, -signal.SIGTERM), log  # uvicorn ends by re-raising the signal it caught
    assert stopped_after < 1.0, f"the stop took {stopped_after:.2f} s\n{log}"
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert refuses(listener)
    # the listener stopped before the HTTP server began its own shutdown
    assert log.index("the debug listener stopped accepting connections") < log.index("Waiting for application shutdown")
    assert all([line for line in stream_lines if line][-1] == ": live" for stream_lines in lines)
