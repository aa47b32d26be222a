"""The daemon as a process of its own (``plugin-daemon serve``): for the benchmark, and for tests that
signal it, kill it or hold its sockets.

The daemon runs exactly as an operator runs it (same CLI, same uvicorn settings), on loopback, with
its state in a temporary home; plugin environments live in a working path kept between runs, so a
run after the first builds none.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

KEY = "benchmark-server-key-0123456789"
TENANT = "tenant-bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """``python -m plugin_daemon.cli serve`` with the benchmark's settings."""

    def __init__(
        self, home: Path, working_path: Path, *, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.home = home
        self.working_path = working_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.log_path = home / "daemon.log"

    def start(self) -> DaemonProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PLUGIN_DAEMON_HOME": str(self.home),
            "PLUGIN_WORKING_PATH": str(self.working_path),
            "SERVER_KEY": KEY,
            "SERVER_PORT": str(self.port),
            "PLATFORM": "local",
            "LOG_LEVEL": "WARNING",
            "PLUGIN_READY_TIMEOUT": "60",
            "PLUGIN_REMOTE_INSTALLING_PORT": "0",  # a free port: a taken one stops the start
            "FORCE_VERIFYING_SIGNATURE": "false",  # the benchmark's plugins are unsigned
            "DAEMON_NON_DUMPABLE": "false",  # the direct phases take the daemon's sockets (pidfd_getfd)
            **self.extra_env,
        }
        env.pop("VIRTUAL_ENV", None)
        # Another version of the daemon's code (e.g. a worktree of an older commit), for before/after figures.
        if other := os.environ.get("PLUGIN_DAEMON_BENCH_DAEMON_PYTHONPATH"):
            env["PYTHONPATH"] = other
        log = self.log_path.open("ab")
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plugin_daemon.cli", "serve", "--port", str(self.port)],
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def client(self, timeout: float = 60.0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"X-Api-Key": KEY}, timeout=timeout)

    async def wait_http(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the daemon exited ({self.process.returncode}); log:\n{self.log_tail()}")
                try:
                    if (await client.get("/health/check")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the daemon did not answer within {timeout} s; log:\n{self.log_tail()}")
                await asyncio.sleep(0.02)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=10, headers={"X-Api-Key": KEY}) as client:
            return dict((await client.get("/health/check")).json())  # with the key: the runtimes' details

    async def plugin_pids(self) -> dict[str, int]:
        """identifier -> pid of each running local plugin process."""
        plugins = (await self.health())["runtimes"].get("local", {}).get("plugins", {})
        return {identifier: state["pid"] for identifier, state in plugins.items() if state.get("pid")}


def envelope(response: httpx.Response) -> Any:
    body = response.json()
    if body.get("code") != 0:
        raise RuntimeError(f"{response.request.url.path}: {body}")
    return body["data"]


async def upload(client: httpx.AsyncClient, package: bytes) -> str:
    response = await client.post(
        f"/plugin/{TENANT}/management/install/upload/package",
        files={"dify_pkg": ("dify_pkg", package, "application/octet-stream")},
        data={"verify_signature": "false"},
    )
    return str(envelope(response)["unique_identifier"])


async def install(client: httpx.AsyncClient, identifiers: list[str], timeout: float = 900.0) -> None:
    """Install ``identifiers`` in one task and wait for it to succeed."""
    started = envelope(
        await client.post(
            f"/plugin/{TENANT}/management/install/identifiers",
            json={"plugin_unique_identifiers": identifiers, "source": "package", "metas": [{} for _ in identifiers]},
        )
    )
    if started["all_installed"]:
        return
    deadline = time.monotonic() + timeout
    while True:
        task = envelope(await client.get(f"/plugin/{TENANT}/management/install/tasks/{started['task_id']}"))
        if task["status"] == "success":
            return
        if task["status"] == "failed":
            raise RuntimeError(f"install failed: {task}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"install still {task['status']} after {timeout} s")
        await asyncio.sleep(0.2)
