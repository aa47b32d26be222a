"""SIGTERM to a daemon process with calls in flight: the calls that finish within the grace period
arrive whole, the one that does not gets an error event before its end (never a silent, complete-
looking truncation), no new call is taken, and the process exits soon after the grace period."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from plugin_daemon.packages import build_package

from tests.runtimes.local.local_runtime_support import PLUGINS, SHARED_WORK
from tests.support.daemon_process import DaemonProcess, install, upload
from tests.support.soak import ERROR, WHOLE, ticks_call

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

GRACE = 4.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def started_daemon(home: Path, **env: str) -> DaemonProcess:
    daemon = DaemonProcess(home, SHARED_WORK, env={"LOG_LEVEL": "INFO", **env}).start()
    await daemon.wait_http()
    async with daemon.client(timeout=600) as client:
        await install(client, [await upload(client, build_package(PLUGINS / "echo_tool"))])
    return daemon


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[DaemonProcess]:
    running = await started_daemon(tmp_path / "home", SERVER_SHUTDOWN_GRACE_PERIOD=str(GRACE))
    try:
        yield running
    finally:
        running.stop()


async def calls_running(daemon: DaemonProcess, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (await daemon.health())["active_requests"] < count:
        assert time.monotonic() < deadline, f"{count} calls were not running within {timeout} s"
        await asyncio.sleep(0.02)


async def refused(url: str) -> bool:
    try:
        async with httpx.AsyncClient(base_url=url, timeout=2) as fresh:
            await fresh.get("/health/check")
    except httpx.ConnectError:
        return True
    return False


async def test_sigterm_lets_short_calls_finish_and_cuts_long_ones_with_an_error(daemon: DaemonProcess) -> None:
    async with daemon.client() as client:
        assert (await ticks_call(client, 2, 0)).kind == WHOLE  # the plugin is up
        short = asyncio.create_task(ticks_call(client, 15, 0.1))  # 1.4 s: within the grace period
        long = asyncio.create_task(ticks_call(client, 200, 0.1))  # 20 s: cut at the end of it
        await calls_running(daemon, 2)
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # no new call is taken: the listening socket is closed at once
        while not await refused(daemon.url):
            assert time.monotonic() - signalled < 2, "the daemon still took new connections 2 s after SIGTERM"
            await asyncio.sleep(0.02)
        short_outcome, long_outcome = await asyncio.wait_for(asyncio.gather(short, long), GRACE + 10)
        cut_after = time.monotonic() - signalled

    assert short_outcome.kind == WHOLE and short_outcome.items == 15, short_outcome
    assert long_outcome.kind == ERROR, long_outcome
    assert "daemon shutting down" in long_outcome.detail, long_outcome
    assert 0 < long_outcome.items < 200
    assert GRACE - 0.5 < cut_after < GRACE + 5, cut_after
    exit_code = await asyncio.to_thread(daemon.process.wait, 30)  # type: ignore[union-attr]
    assert exit_code in (0, -signal.SIGTERM), daemon.log_tail()
    assert time.monotonic() - signalled < GRACE + 15
