"""The debug listener under attack, against a daemon process whose memory is read from /proc.

- Silent connections, renewed as fast as the daemon closes them, never keep a developer (the real
  SDK) out.
- Lines before the key are cut at a few kilobytes, and cost nothing once refused.
- Sixteen registrations of 44 MiB with one valid key: the workspace's cap is applied as soon as
  the key is accepted, the bytes read at once are capped, and what they held is given back.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtimes.debug.debug_support import (
    TENANT,
    RawClient,
    SdkPlugin,
    registration_frames,
    wait_installed,
    wait_uninstalled,
)
from tests.support.daemon_process import KEY, DaemonProcess, free_port
from tests.support.waiting import wait_for

MiB = 1024 * 1024
#: What an attack may leave the daemon's resident memory grown by.
MEMORY_SLACK = 50 * MiB
HANDSHAKE_LINE_LIMIT = 4096
TENANT_CAP = 5


class Daemon:
    """A daemon process with its debug listener, and a synchronous client of its API."""

    def __init__(self, process: DaemonProcess, port: int) -> None:
        self.process = process
        self.port = port
        self.client = httpx.Client(base_url=process.url, headers={"X-Api-Key": KEY}, timeout=60)

    def rss(self) -> int:
        return self.process.rss()

    def listener(self) -> dict[str, Any]:
        return dict(self.client.get("/health/check").json()["runtimes"]["remote"])

    def key(self, tenant: str) -> str:
        body = self.client.post(f"/plugin/{tenant}/debugging/key").json()
        assert body["code"] == 0, body
        return str(body["data"]["key"])


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    home = tmp_path_factory.mktemp("debug-admission")
    port = free_port()
    env = {"PLUGIN_REMOTE_INSTALLING_PORT": str(port), "PLATFORM": "remote"}
    process = DaemonProcess(home / "home", home / "cwd", env=env).start()
    try:
        asyncio.run(process.wait_http())
        running = Daemon(process, port)
        with running.client:
            wait_for(lambda: running.listener()["listening"], 10, "the debug listener")
            yield running
    finally:
        process.stop()


def send_until_answered(client: RawClient, data: bytes, piece: int = 256 * 1024) -> None:
    """Send ``data``, stopping early once the daemon has answered (it refused) or closed."""
    for start in range(0, len(data), piece):
        readable, _, _ = select.select([client.sock], [], [], 0)
        if readable:
            return
        try:
            client.send(data[start : start + piece])
        except OSError:
            return


def answer_of(client: RawClient, timeout: float) -> bytes | None:
    """The daemon's line if it refused the connection, None while it keeps it open."""
    readable, _, _ = select.select([client.sock], [], [], timeout)
    if not readable:
        return None
    return client.read_until_closed(10)


def test_lines_before_the_key_are_cut_short_and_leave_nothing_behind(daemon: Daemon) -> None:
    line = b"x" * (5 * MiB)  # no newline: a peer that never ends its first line
    expected = f"handshake failed, a registration line is longer than {HANDSHAKE_LINE_LIMIT} bytes\n".encode()

    def attack(number: int) -> bytes:
        with RawClient(daemon.port, source=f"127.0.1.{number % 32 + 1}", timeout=30) as client:
            send_until_answered(client, line)
            return client.read_until_closed(30)

    before = daemon.rss()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(attack, range(128)))
    assert answers == [expected] * 128
    wait_for(lambda: daemon.listener()["connections"] == 0, 10, "the refused connections to be gone")
    grown = daemon.rss() - before
    assert grown < MEMORY_SLACK, f"the daemon kept {grown >> 20} MiB"


def test_registrations_are_capped_as_soon_as_the_key_is_accepted(daemon: Daemon) -> None:
    key = daemon.key("tenant-heavy")
    frames = registration_frames(key, assets={"big.bin": os.urandom(33 * MiB)})
    assert len(frames) > 44 * MiB
    clients = [RawClient(daemon.port, source=f"127.0.2.{number + 1}", timeout=60) for number in range(16)]
    before = daemon.rss()
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda client: send_until_answered(client, frames), clients))

        def settled() -> bool:
            registered = daemon.client.get("/plugin/tenant-heavy/debugging/plugins").json()["data"]
            readable, _, _ = select.select([client.sock for client in clients], [], [], 0)
            return len(registered) + len(readable) == len(clients)

        wait_for(settled, 30, "every registration registered or refused")
        answers = [answer_of(client, 0) for client in clients]
        kept = [client for client, answer in zip(clients, answers, strict=True) if answer is None]
        capped = [answer for answer in answers if answer and answer.startswith(b"too many debugging connections")]
        busy = [answer for answer in answers if answer and answer.startswith(b"server is busy now")]
        assert len(capped) >= 16 - TENANT_CAP, answers  # refused before their 44 MiB were read
        assert len(kept) + len(capped) + len(busy) == 16, answers
        assert len(busy) >= 1  # five at once hold more than PLUGIN_REMOTE_INSTALLING_MAX_REGISTERING_BYTES
        assert 1 <= len(kept) <= TENANT_CAP
    finally:
        for client in clients:
            client.close()
    wait_for(lambda: daemon.listener()["connections"] == 0, 15, "every connection to be gone")
    wait_uninstalled(daemon.client, "tester/echo_tool", "tenant-heavy")
    grown = daemon.rss() - before
    assert grown < MEMORY_SLACK, f"the daemon kept {grown >> 20} MiB"


class SilentCrowd:
    """``size`` silent connections from 4 per address, each replaced as soon as the daemon closes it."""

    def __init__(self, port: int, size: int) -> None:
        self.port = port
        self.clients = [self._open(number) for number in range(size)]
        self.closed_by_daemon = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def _open(self, number: int) -> RawClient:
        return RawClient(self.port, source=f"127.0.3.{number // 4 + 1}", timeout=5)

    def _renew(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([client.sock for client in self.clients], [], [], 0.2)
            for number, client in enumerate(self.clients):
                if client.sock in readable:
                    client.close()
                    self.closed_by_daemon += 1
                    self.clients[number] = self._open(number)

    def __enter__(self) -> SilentCrowd:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)
        for client in self.clients:
            client.close()


@pytest.mark.slow
def test_renewed_silent_connections_never_keep_a_developer_out(daemon: Daemon, tmp_path: Path) -> None:
    with SilentCrowd(daemon.port, 300) as crowd:
        wait_for(lambda: daemon.listener()["connections"] >= 256, 10, "a full listener")
        plugin = SdkPlugin("echo_tool", daemon.port, daemon.key(TENANT), tmp_path / "logs").start()
        try:
            started = time.monotonic()
            wait_installed(daemon.client, "tester/echo_tool")
            assert crowd.closed_by_daemon > 0
            assert time.monotonic() - started < 60
        finally:
            plugin.kill()
    assert "server is busy" not in plugin.output()
    wait_uninstalled(daemon.client, "tester/echo_tool")
