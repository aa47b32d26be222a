"""HTTP connection limits on a daemon process, with real sockets: silent and slowloris connections
are closed after the header timeout, an idle keep-alive connection after the idle timeout, a
request past the concurrency cap gets a 503 in Dify's envelope at once, and normal calls keep
working throughout, even from a soft open-file limit of 1,024 (the daemon raises it, as Go does)."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.daemon_process import KEY, DaemonProcess

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT, READ_TIMEOUT, IDLE_TIMEOUT, CAP = 2.0, 4.0, 2.0, 20
SILENT, SLOWLORIS = 1000, 300


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def daemon(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DaemonProcess]:
    """One daemon process for the module: each test leaves it with no connection held."""
    home = tmp_path_factory.mktemp("connection-limits")
    env = {
        "SERVER_READ_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "SERVER_READ_TIMEOUT": str(READ_TIMEOUT),
        "SERVER_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        "SERVER_MAX_CONCURRENT_REQUESTS": str(CAP),
        "PLUGIN_REMOTE_INSTALLING_ENABLED": "false",
    }
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))  # what the daemon inherits
    try:
        process = DaemonProcess(home / "home", home / "cwd", env=env).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        await process.wait_http()
        yield process
    finally:
        process.stop()


async def closed_after(reader: asyncio.StreamReader, began: float) -> float:
    """Seconds from ``began`` until the daemon closed the connection (EOF or reset)."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    return time.monotonic() - began


async def trickle(writer: asyncio.StreamWriter) -> None:
    """A slowloris client: a request line, then one header line every 0.5 s, never the end of the headers."""
    writer.write(b"POST /plugin/t/management/install/identifiers HTTP/1.1\r\nHost: x\r\n")
    try:
        for number in range(100):
            await asyncio.sleep(0.5)
            writer.write(f"X-Trickle-{number}: y\r\n".encode())
            await writer.drain()
    except ConnectionError:
        pass


async def normal_call(url: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers={"X-Api-Key": KEY}, timeout=5) as client:
        return await client.get("/plugin/tenant-1/management/list", params={"page": 1, "page_size": 10})


async def test_silent_and_slowloris_connections_are_closed_and_others_still_served(daemon: DaemonProcess) -> None:
    began = time.monotonic()
    silent = [await asyncio.open_connection("127.0.0.1", daemon.port) for _ in range(SILENT)]
    slow = [await asyncio.open_connection("127.0.0.1", daemon.port) for _ in range(SLOWLORIS)]
    trickles = [asyncio.create_task(trickle(writer)) for _, writer in slow]
    closing = [asyncio.create_task(closed_after(reader, began)) for reader, _ in (*silent, *slow)]

    # meanwhile, 1,300 connections held: normal calls are served
    response = await normal_call(daemon.url)
    assert response.status_code == 200 and response.json()["code"] == 0, response.text

    seconds = await asyncio.wait_for(asyncio.gather(*closing), HEADER_TIMEOUT + 30)
    for task in trickles:
        task.cancel()
    for _, writer in (*silent, *slow):
        writer.close()
    assert min(seconds) >= HEADER_TIMEOUT - 0.5, min(seconds)  # closed by the timeout, not before
    assert max(seconds) < HEADER_TIMEOUT + 20, max(seconds)
    assert (await normal_call(daemon.url)).status_code == 200


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(daemon: DaemonProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    writer.write(b"GET /health/check HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert b" 200 " in status
    answered = time.monotonic()
    seconds = await asyncio.wait_for(closed_after(reader, answered), IDLE_TIMEOUT + 10)
    writer.close()
    assert IDLE_TIMEOUT - 0.5 <= seconds < IDLE_TIMEOUT + 5, seconds


async def test_past_the_concurrency_cap_a_request_gets_503_at_once(daemon: DaemonProcess) -> None:
    # CAP requests whose headers arrived and whose body never comes: each holds a place until the read timeout
    held = []
    for _ in range(CAP):
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(
            b"POST /plugin/t/management/install/identifiers HTTP/1.1\r\nHost: x\r\nX-Api-Key: "
            + KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        await writer.drain()
        held.append((reader, writer))
    began = time.monotonic()
    while True:  # the held requests reach the app in the next few milliseconds
        response = await normal_call(daemon.url)
        if response.status_code == 503:
            break
        assert time.monotonic() - began < 2, "the cap never refused a request"
    assert time.monotonic() - began < 2
    body = response.json()
    assert body["code"] == -503 and body["data"] is None, body
    assert "SERVER_MAX_CONCURRENT_REQUESTS" in json.loads(body["message"])["message"]

    # the held requests are ended by the read timeout, and their places come back
    await asyncio.wait_for(asyncio.gather(*(closed_after(reader, began) for reader, _ in held)), READ_TIMEOUT + 10)
    for _, writer in held:
        writer.close()
    assert (await normal_call(daemon.url)).status_code == 200
