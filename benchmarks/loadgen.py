"""The load generator: closed-loop callers over keep-alive HTTP/1.1 connections (asyncio), or wrk.

A *caller* is a coroutine function that makes one call and returns when its answer is complete;
:func:`closed_loop` runs ``callers`` of them back to back for a measured window (after a warm-up)
and reports throughput and latencies. The same loop drives the daemon over HTTP and the plugin
straight over its pipes, so both sides pay the same client cost.

:class:`HttpConnection` is deliberately minimal: one request at a time on one socket, a
pre-encoded request, and a response parser that understands ``Content-Length`` and
``Transfer-Encoding: chunked`` (each chunk of an SSE answer is one event, timed as it arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

Caller = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class HttpTarget:
    """One POST, encoded once."""

    host: str
    port: int
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def encode(self) -> bytes:
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(self.body)}"]
        head += [f"{name}: {value}" for name, value in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + self.body


class HttpError(Exception):
    pass


class HttpConnection:
    """A keep-alive HTTP/1.1 connection that sends pre-encoded requests one at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        return cls(reader, writer)

    async def request(self, raw: bytes, events: list[tuple[float, bytes]] | None = None) -> int:
        """Send ``raw``, read the whole answer; return the status. ``events`` gets (time, chunk)."""
        self.writer.write(raw)
        reader = self.reader
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            clock = time.perf_counter
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                chunk = await reader.readexactly(size + 2)
                if events is not None:
                    events.append((clock(), chunk[:-2]))
        else:
            match = re.search(rb"content-length:\s*(\d+)", lowered)
            if match is None:
                raise HttpError(f"answer without a length: {head[:200]!r}")
            body = await reader.readexactly(int(match.group(1)))
            if events is not None:
                events.append((time.perf_counter(), body))
        return status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def http_caller(connection: HttpConnection, raw: bytes, check: Callable[[list[tuple[float, bytes]]], None]) -> Caller:
    """A caller sending ``raw`` on ``connection``; ``check`` sees the answer's chunks (raises if wrong)."""

    async def call() -> None:
        events: list[tuple[float, bytes]] = []
        status = await connection.request(raw, events)
        if status != 200:
            raise HttpError(f"status {status}: {b''.join(chunk for _, chunk in events)[:300]!r}")
        check(events)

    return call


@dataclass
class LoadResult:
    callers: int
    completed: int
    seconds: float
    latencies: list[float] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        """Latency percentile in seconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
        return ordered[index]


async def closed_loop(callers: list[Caller], *, duration: float, warmup: float) -> LoadResult:
    """Run every caller back to back; count the calls that start and end inside the window."""
    clock = time.perf_counter
    begin = clock()
    window_start = begin + warmup
    window_end = window_start + duration
    latencies: list[float] = []
    completed = 0

    async def loop(call: Caller) -> None:
        nonlocal completed
        while True:
            started = clock()
            if started >= window_end:
                return
            await call()
            ended = clock()
            if started >= window_start and ended <= window_end:
                completed += 1
                latencies.append(ended - started)

    await asyncio.gather(*(loop(call) for call in callers))
    return LoadResult(len(callers), completed, duration, latencies)


# --- wrk ------------------------------------------------------------------------------------


def wrk_path() -> str | None:
    return shutil.which("wrk")


_WRK_RATE = re.compile(r"Requests/sec:\s*([\d.]+)")
_WRK_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def run_wrk(target: HttpTarget, *, connections: int, duration: float) -> LoadResult:
    """Throughput (and p50/p99) of ``target`` at ``connections`` with wrk."""
    lua = "\n".join(
        [
            'wrk.method = "POST"',
            f"wrk.body = {_lua_string(target.body)}",
            *(f"wrk.headers[{_lua_string(k.encode())}] = {_lua_string(v.encode())}" for k, v in target.headers.items()),
        ]
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(lua)
        script = Path(handle.name)
    try:
        threads = max(1, min(2, connections))
        seconds = max(1, round(duration))
        out = subprocess.run(
            [
                str(wrk_path()),
                f"-t{threads}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                target.url,
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=True,
        ).stdout
    finally:
        script.unlink(missing_ok=True)
    rate = _WRK_RATE.search(out)
    if rate is None or "Non-2xx" in out or "Socket errors" in out:
        raise HttpError(f"wrk failed or saw errors:\n{out}")
    result = LoadResult(connections, round(float(rate.group(1)) * seconds), float(seconds))
    percentiles = {int(p): float(v) * _UNITS[u] for p, v, u in _WRK_PERCENTILE.findall(out)}
    result.latencies = [percentiles.get(50, float("nan")), percentiles.get(99, float("nan"))]
    return result


def _lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{byte}" for byte in data) + '"'
