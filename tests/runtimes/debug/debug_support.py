"""Helpers of the debug runtime tests: a daemon with its listener on a free loopback port, and real
SDK plugins started with ``INSTALL_METHOD=remote`` against it.

Every SDK process runs in its own process group and is killed (SIGKILL) by :meth:`SdkPlugin.kill`:
after its reconnects fail the SDK never exits and spins at 100% CPU, so a test must never leave one.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from plugin_daemon.config import Settings
from plugin_daemon.packages import build_package, decode_package

from tests.conftest import TEST_KEY
from tests.support.daemon_server import DaemonServer
from tests.support.plugin_driver import ENV_ALLOW_LIST, PLUGINS_DIR, ensure_venv
from tests.support.waiting import wait_for

TENANT = "tenant-debug"
#: A plugin process starting (imports, registration) may take this long on a loaded machine.
START_DEADLINE = 60.0


def debug_settings(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "PLUGIN_DAEMON_HOME": home,
        "SERVER_KEY": TEST_KEY,
        "DIFY_INNER_API_KEY": "inner-key",
        "PLATFORM": "remote",
        "PLUGIN_REMOTE_INSTALLING_PORT": 0,  # a free port; the runtime says which
        "FORCE_VERIFYING_SIGNATURE": False,  # the test plugins are unsigned
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def debug_runtime(server: DaemonServer) -> Any:
    return server.daemon.control_panel.runtimes["remote"]


def debug_port(server: DaemonServer) -> int:
    address = debug_runtime(server).address
    assert address is not None, debug_runtime(server).listen_error
    return address[1]


def debugging_key(client: httpx.Client, tenant: str = TENANT) -> str:
    body = client.post(f"/plugin/{tenant}/debugging/key").json()
    assert body["code"] == 0, body
    return body["data"]["key"]


def installations(client: httpx.Client, tenant: str = TENANT) -> dict[str, dict[str, Any]]:
    body = client.get(f"/plugin/{tenant}/management/list", params={"page": 1, "page_size": 100}).json()
    assert body["code"] == 0, body
    return {item["plugin_id"]: item for item in body["data"]["list"]}


def wait_installed(
    client: httpx.Client, plugin_id: str, tenant: str = TENANT, timeout: float = START_DEADLINE
) -> dict[str, Any]:
    found = wait_for(lambda: installations(client, tenant).get(plugin_id), timeout, f"{plugin_id} to be installed")
    assert found is not None
    return found


def wait_uninstalled(client: httpx.Client, plugin_id: str, tenant: str = TENANT, timeout: float = 10.0) -> None:
    wait_for(lambda: plugin_id not in installations(client, tenant), timeout, f"{plugin_id} to be uninstalled")


class SdkPlugin:
    """A plugin folder of tests/plugins run with the real SDK in remote (debug) mode."""

    def __init__(self, name: str, port: int, key: str, logs: Path, *, env: dict[str, str] | None = None) -> None:
        self.folder = PLUGINS_DIR / name
        self.python = ensure_venv(self.folder)
        self.port = port
        self.key = key
        self.logs = logs
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._output: Path | None = None
        self.starts = 0

    def start(self) -> SdkPlugin:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW_LIST or k.startswith("LC_")}
        env.update(
            INSTALL_METHOD="remote",
            REMOTE_INSTALL_URL=f"127.0.0.1:{self.port}",
            REMOTE_INSTALL_KEY=self.key,
            PYTHONDONTWRITEBYTECODE="1",
            HEARTBEAT_INTERVAL="1",
        )
        env.update(self.extra_env)
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        self._output = self.logs / f"{self.folder.name}-{self.starts}.log"
        with open(self._output, "wb") as output:
            self.proc = subprocess.Popen(
                [str(self.python), "-m", "main"],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def output(self) -> str:
        return self._output.read_text(errors="replace") if self._output and self._output.exists() else ""


#: Raw bytes per asset chunk, as the SDK sends them.
ASSET_CHUNK = 8192


def registration_frames(key: str, plugin: str = "echo_tool", *, assets: dict[str, bytes] | None = None) -> bytes:
    """The registration the SDK sends for ``tests/plugins/<plugin>`` (a tool plugin), byte for byte in form;
    ``assets`` are more files sent as the SDK sends assets (chunks of 8 KiB)."""
    folder = PLUGINS_DIR / plugin
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    provider = decode_package(build_package(folder)).declaration["tool"]
    provider["identity"]["icon"] = manifest["icon"]  # the SDK sends file names; the daemon remaps them
    icon = base64.b64encode((folder / "_assets" / manifest["icon"]).read_bytes()).decode()
    frames = [
        orjson.dumps({"type": "handshake", "data": {"key": key}}) + b"\n",
        orjson.dumps({"type": "manifest_declaration", "data": manifest}) + b"\n\n",
        orjson.dumps({"type": "tool_declaration", "data": [provider]}) + b"\n\n",
        orjson.dumps({"type": "asset_chunk", "data": {"filename": manifest["icon"], "data": icon, "end": True}})
        + b"\n\n",
    ]
    for name, content in (assets or {}).items():
        for start in range(0, len(content), ASSET_CHUNK):
            piece = base64.b64encode(content[start : start + ASSET_CHUNK]).decode()
            end = start + ASSET_CHUNK >= len(content)
            frames.append(orjson.dumps({"type": "asset_chunk", "data": {"filename": name, "data": piece, "end": end}}))
            frames.append(b"\n\n")
    frames.append(orjson.dumps({"type": "end", "data": {}}) + b"\n\n")
    return b"".join(frames)


class RawClient:
    """A hand-written TCP peer of the debug listener (for what the SDK never sends)."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self, timeout: float = 10.0) -> bytes:
        """One line the daemon writes (without its newline)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line from the daemon within {timeout} s; got {self._buffer!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"the daemon closed the connection; got {self._buffer!r}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def read_until_closed(self, timeout: float = 10.0) -> bytes:
        """Everything the daemon writes until it closes the connection (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        data, self._buffer = self._buffer, b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the daemon did not close the connection within {timeout} s; got {data!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data
            except TimeoutError:
                continue
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
