"""Which runtimes get a row of echo-tool figures besides the local one, and how the benchmark reaches each.

The local runtime's row is measured side by side with the same plugin process driven straight
over its stdio (see ``run.py``). Any other runtime gets the same figures through the daemon
(p50/p99 at 1 caller, throughput at 1/8/64), compared with that direct floor. To add one, give a
:class:`RuntimeRow` a ``connect``: an async context manager that gets a daemon of its own running
with the ``echo_tool`` plugin answering on that runtime, and yields the HTTP request that calls its
``echo`` tool. A runtime that is not registered in this environment is skipped with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from loadgen import HttpTarget

from tests.support.daemon_process import KEY, TENANT, DaemonProcess, envelope, free_port, install, upload


@dataclass(frozen=True)
class RowContext:
    """What an adapter gets from the run."""

    scratch: Path  # a folder of its own to use
    working_path: Path  # where plugin environments are kept
    echo_package: bytes  # tests/plugins/echo_tool as a .difypkg
    echo_folder: Path  # that package installed by the local runtime: its files and its .venv
    echo_target: Callable[[DaemonProcess], HttpTarget]
    wait_answering: Callable[[DaemonProcess], AbstractAsyncContextManager[None]]


Connect = Callable[[RowContext], AbstractAsyncContextManager[HttpTarget]]


@dataclass(frozen=True)
class RuntimeRow:
    runtime: str  # the name the runtime registers under
    title: str
    connect: Connect | None = None  # None: no adapter yet, the row is skipped with a note


@contextlib.asynccontextmanager
async def _daemon(home: Path, working_path: Path, env: dict[str, str]) -> AsyncIterator[DaemonProcess]:
    daemon = DaemonProcess(home, working_path, env=env).start()
    try:
        await daemon.wait_http()
        yield daemon
    finally:
        daemon.stop()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


@contextlib.asynccontextmanager
async def connect_debug(context: RowContext) -> AsyncIterator[HttpTarget]:
    """The SDK in remote mode (``INSTALL_METHOD=remote``) connects to the daemon's debug listener."""
    port = free_port()
    env = {"PLATFORM": "remote", "PLUGIN_REMOTE_INSTALLING_PORT": str(port)}
    async with _daemon(context.scratch / "home", context.working_path, env) as daemon:
        async with daemon.client() as client:
            key = envelope(await client.post(f"/plugin/{TENANT}/debugging/key"))["key"]
        plugin = subprocess.Popen(
            [str(context.echo_folder / ".venv/bin/python"), "-m", "main"],
            cwd=context.echo_folder,
            env={
                "PATH": os.environ["PATH"],
                "INSTALL_METHOD": "remote",
                "REMOTE_INSTALL_URL": f"127.0.0.1:{port}",
                "REMOTE_INSTALL_KEY": key,
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            async with context.wait_answering(daemon):
                yield context.echo_target(daemon)
        finally:
            _kill_group(plugin)


@contextlib.asynccontextmanager
async def connect_serverless(context: RowContext) -> AsyncIterator[HttpTarget]:
    """The ``local`` provider of ``plugin-daemon connector`` runs the plugin as a function."""
    connector_port, connector_key = free_port(), "benchmark-connector-key"
    daemon = DaemonProcess(context.scratch / "home", context.working_path)
    daemon.extra_env.update(
        {
            "PLATFORM": "serverless",
            "DIFY_PLUGIN_SERVERLESS_CONNECTOR_URL": f"http://127.0.0.1:{connector_port}",
            "DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY": connector_key,
        }
    )
    connector_home = context.scratch / "connector"
    connector_home.mkdir(parents=True, exist_ok=True)
    connector = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "plugin_daemon.cli",
            "connector",
            "--port",
            str(connector_port),
            "--api-key",
            connector_key,
            "--provider",
            "local",
            "--daemon-url",
            daemon.url,
            "--home",
            str(connector_home),
            "--working-path",
            str(context.working_path),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "SERVER_KEY": KEY},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(connector_home / "connector.log").open("wb"),
        start_new_session=True,
    )
    try:
        daemon.start()
        try:
            await daemon.wait_http()
            async with daemon.client(timeout=600) as client:
                for _ in range(600):  # the connector may still be starting
                    with contextlib.suppress(OSError):
                        _, writer = await asyncio.open_connection("127.0.0.1", connector_port)
                        writer.close()
                        break
                    await asyncio.sleep(0.05)
                await install(client, [await upload(client, context.echo_package)])
            async with context.wait_answering(daemon):
                yield context.echo_target(daemon)
        finally:
            daemon.stop()
    finally:
        _kill_group(connector)


OTHER_RUNTIMES: tuple[RuntimeRow, ...] = (
    RuntimeRow("remote", "debug runtime (TCP)", connect_debug),
    RuntimeRow("serverless", "serverless runtime (HTTP function, local connector)", connect_serverless),
)


def registered_runtimes() -> set[str]:
    """Runtimes the daemon would load here (entry points of the installed distributions)."""
    from plugin_daemon.plugins import load_extensions

    return set(load_extensions().runtime_factories())
