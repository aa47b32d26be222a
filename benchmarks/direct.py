"""Straight to a plugin process: request lines on its stdin, session messages from its stdout.

This is the SDK's own framing (one JSON object per line, ``reference/protocol.md`` §1) with nothing
in between: the floor the daemon is compared with.

:meth:`DirectPlugin.attach` takes over the stdio of a plugin process that the daemon launched, so
both sides of a comparison talk to the same process. The caller must freeze the daemon meanwhile
(SIGSTOP), or two readers would split the plugin's output between them. When the daemon gave the
plugin pipes (asyncio), the plugin's own ``/proc/PID/fd/0`` and ``/proc/PID/fd/1`` are opened: a
pipe has one buffer, whoever opens it. When it gave it socket pairs (uvloop/libuv), the daemon's
ends are needed instead: their inodes are the peers of the plugin's (``ss -x``), and
``pidfd_getfd(2)`` copies them from the daemon. :meth:`DirectPlugin.spawn` is the fallback where
neither works: a process of its own from the same environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

#: Called with (arrival time, message) for every session message.
MessageHandler = Callable[[float, dict[str, Any]], None]


class DirectPluginError(Exception):
    pass


class _Session:
    __slots__ = ("done", "messages", "on_message")

    def __init__(self, done: asyncio.Future[list[dict[str, Any]]], on_message: MessageHandler | None) -> None:
        self.done = done
        self.messages: list[dict[str, Any]] = []
        self.on_message = on_message


class _Reader(asyncio.Protocol):
    def __init__(self, owner: DirectPlugin) -> None:
        self.owner = owner
        self.partial = b""

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        route = self.owner._route
        for line in lines:
            if line.strip():
                route(now, line)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


class DirectPlugin:
    """One plugin process's stdio, driven with the SDK framing; many sessions at once."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._write: Any = None
        self._transports: list[asyncio.BaseTransport] = []
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task[None] | None = None
        self.heartbeat = asyncio.Event()

    @classmethod
    async def attach(cls, pid: int, owner_pid: int) -> DirectPlugin:
        """Take over the stdin and stdout of process ``pid``, launched by ``owner_pid`` (Linux only)."""
        write_fd, read_fd = _stdio_of(pid, owner_pid)
        plugin = cls()
        await plugin._connect(os.fdopen(write_fd, "wb", buffering=0), os.fdopen(read_fd, "rb", buffering=0))
        return plugin

    @classmethod
    async def spawn(cls, argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 60.0) -> DirectPlugin:
        """Start a plugin process of our own; returns once it sent its first heartbeat."""
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        plugin = cls()
        plugin._process = process
        assert process.stdin is not None and process.stdout is not None
        plugin._write = process.stdin.write
        reader = _Reader(plugin)

        async def pump(stdout: asyncio.StreamReader) -> None:
            while chunk := await stdout.read(256 * 1024):
                reader.data_received(chunk)
            reader.connection_lost(None)

        plugin._pump = asyncio.get_running_loop().create_task(pump(process.stdout))
        await asyncio.wait_for(plugin.heartbeat.wait(), timeout)
        return plugin

    async def _connect(self, stdin: Any, stdout: Any) -> None:
        loop = asyncio.get_running_loop()
        write_transport, _ = await loop.connect_write_pipe(asyncio.Protocol, stdin)
        read_transport, _ = await loop.connect_read_pipe(lambda: _Reader(self), stdout)
        self._write = write_transport.write
        self._transports = [write_transport, read_transport]

    def _route(self, now: float, line: bytes) -> None:
        try:
            frame = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if type(frame) is not dict:
            return
        event = frame.get("event")
        if event == "heartbeat":
            self.heartbeat.set()
            return
        if event != "session":
            return
        session = self._sessions.get(frame.get("session_id"))  # type: ignore[arg-type]
        if session is None:
            return
        message = frame.get("data") or {}
        session.messages.append(message)
        if session.on_message is not None:
            session.on_message(now, message)
        if message.get("type") in ("end", "error"):
            del self._sessions[frame["session_id"]]
            if not session.done.done():
                session.done.set_result(session.messages)

    def _lost(self) -> None:
        for session in self._sessions.values():
            if not session.done.done():
                session.done.set_exception(DirectPluginError("the plugin's stdout closed"))
        self._sessions.clear()

    async def request(self, data: dict[str, Any], on_message: MessageHandler | None = None) -> list[dict[str, Any]]:
        """Send one request (``data`` = ``{user_id, type, action, ...}``); every message until ``end``."""
        session_id = str(uuid.uuid4())
        done: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._sessions[session_id] = _Session(done, on_message)
        self._write(
            orjson.dumps(
                {
                    "session_id": session_id,
                    "conversation_id": None,
                    "message_id": None,
                    "app_id": None,
                    "endpoint_id": None,
                    "context": None,
                    "event": "request",
                    "data": data,
                }
            )
            + b"\n"
        )
        return await done

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports = []
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            await self._process.wait()
        if self._pump is not None:
            self._pump.cancel()
        await asyncio.sleep(0)  # let the transports release their file descriptors


# --- finding a process's stdio -----------------------------------------------------------------

_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture (the generic syscall table)


def _link(pid: int, fd: int | str) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def _stdio_of(pid: int, owner_pid: int) -> tuple[int, int]:
    """File descriptors here through which we write to ``pid``'s stdin and read its stdout."""
    stdin, stdout = _link(pid, 0), _link(pid, 1)
    if stdin.startswith("pipe:") and stdout.startswith("pipe:"):
        return (
            os.open(f"/proc/{pid}/fd/0", os.O_WRONLY | os.O_NONBLOCK),
            os.open(f"/proc/{pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK),
        )
    if not (stdin.startswith("socket:") and stdout.startswith("socket:")):
        raise DirectPluginError(f"unexpected stdio of process {pid}: {stdin}, {stdout}")
    peers = _unix_peers()
    wanted = {peers.get(_inode(stdin)), peers.get(_inode(stdout))}
    owned = {}
    for fd in os.listdir(f"/proc/{owner_pid}/fd"):
        with contextlib.suppress(OSError):
            link = _link(owner_pid, fd)
            if link.startswith("socket:") and _inode(link) in wanted:
                owned[_inode(link)] = int(fd)
    try:
        write_end, read_end = owned[peers[_inode(stdin)]], owned[peers[_inode(stdout)]]
    except KeyError:
        raise DirectPluginError(f"process {owner_pid} holds no peer of {pid}'s stdio sockets") from None
    return _steal(owner_pid, write_end), _steal(owner_pid, read_end)


def _inode(link: str) -> str:
    return link[link.index("[") + 1 : -1]


def _unix_peers() -> dict[str, str]:
    """inode -> peer inode of every connected unix socket (``ss -x``)."""
    if shutil.which("ss") is None:
        raise DirectPluginError("`ss` (iproute2) is needed to pair unix sockets")
    out = subprocess.run(["ss", "-xHn"], capture_output=True, text=True, check=True).stdout
    peers = {}
    for line in out.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local-Address Local-Port Peer-Address Peer-Port
        if len(fields) >= 8 and fields[5].isdigit() and fields[7].isdigit():
            peers[fields[5]] = fields[7]
    return peers


def _steal(owner_pid: int, fd: int) -> int:
    """A copy, in this process, of ``owner_pid``'s descriptor ``fd`` (pidfd_getfd(2))."""
    pidfd = os.pidfd_open(owner_pid)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        copy = int(libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0))
        if copy < 0:
            raise DirectPluginError(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
        return copy
    finally:
        os.close(pidfd)
