"""The soak: many callers of streamed tool calls against a daemon process, while its plugin is killed
(SIGKILL) now and then and the daemon itself is restarted (SIGTERM, then started again) in the middle.

Every call must end truthfully: with its whole answer, or with an error event (or be refused
before it started). A stream that ends like a complete one without all its items, or with items
lost or out of order, is a silent truncation: the one thing that must never happen.

Run briefly by ``tests/runtimes/local/test_local_soak.py`` and at full length by
``benchmarks/run.py --soak SECONDS``.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from plugin_daemon.packages import build_package

from tests.support.daemon_process import KEY, TENANT, DaemonProcess, install, upload

#: outcomes that are truthful
WHOLE, ERROR, REFUSED = "whole", "error event", "refused before it started"
#: outcomes that must never happen
TRUNCATED, GARBLED, BROKEN = "truncated silently", "items lost or out of order", "connection broken mid-answer"
UNTRUTHFUL = (TRUNCATED, GARBLED, BROKEN)


ECHO_TOOL = Path(__file__).resolve().parents[1] / "plugins" / "echo_tool"
#: short, so that the restart cuts the longer calls (a few seconds each)
SOAK_GRACE_PERIOD = "1"


async def start_soak_daemon(home: Path, working_path: Path) -> DaemonProcess:
    """A daemon process with echo_tool installed for TENANT, ready for a soak."""
    daemon = DaemonProcess(home, working_path, env={"SERVER_SHUTDOWN_GRACE_PERIOD": SOAK_GRACE_PERIOD}).start()
    await daemon.wait_http()
    async with daemon.client(timeout=900) as client:
        await install(client, [await upload(client, build_package(ECHO_TOOL))])
    return daemon


@dataclass
class Outcome:
    kind: str
    items: int
    detail: str = ""
    #: for an error event: what failed (its error type and the start of its message)
    error: str = ""


def error_kind(event: dict[str, Any]) -> str:
    """``error_type: message`` of an error event (the plugin's own, for a PluginInvokeError), cut short."""
    try:
        outer = orjson.loads(event["message"])
        if outer.get("error_type") == "PluginInvokeError":
            outer = orjson.loads(outer["message"])
        reason = (outer.get("args") or {}).get("reason") if isinstance(outer.get("args"), dict) else None
        if reason:  # "plugin <identifier> is not available (<reason>)": the reason says it
            return f"{outer.get('error_type')}: not available ({reason})"
        return f"{outer.get('error_type')}: {str(outer.get('message'))[:48]}"
    except (orjson.JSONDecodeError, TypeError, AttributeError):
        return str(event.get("message"))[:60]


async def ticks_call(client: httpx.AsyncClient, count: int, interval: float, *, timeout: float = 120.0) -> Outcome:
    """One streamed call of echo_tool's ``ticks`` (``count`` items "0", "1", ...), classified."""
    texts: list[str] = []
    error: dict[str, Any] | None = None
    request = {
        "user_id": "soak",
        "data": {
            "provider": "echo_tool",
            "tool": "ticks",
            "tool_parameters": {"count": count, "interval": interval},
            "credentials": {},
            "credential_type": "api-key",
        },
    }
    started = False
    try:
        async with client.stream(
            "POST",
            f"/plugin/{TENANT}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": "tester/echo_tool"},
            json=request,
            timeout=timeout,
        ) as response:
            started = True
            if response.status_code != 200:
                raw = await response.aread()
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = None
                if isinstance(body, dict) and body.get("code") not in (None, 0) and "message" in body:
                    return Outcome(REFUSED, 0, f"{response.status_code} {body['message'][:120]}")
                return Outcome(GARBLED, 0, f"{response.status_code} without Dify's envelope: {raw[:120]!r}")
            async for line in response.aiter_lines():
                if not line:
                    continue
                event = orjson.loads(line.removeprefix("data: "))
                if error is not None:
                    return Outcome(GARBLED, len(texts), f"an event after the error: {line[:120]}")
                if event["code"] != 0:
                    error = event
                else:
                    texts.append(event["data"]["message"]["text"])
    except httpx.TransportError as exc:
        return Outcome(BROKEN if started else REFUSED, len(texts), f"{type(exc).__name__}: {exc}")
    if texts != [str(number) for number in range(len(texts))]:
        return Outcome(GARBLED, len(texts), f"items {texts[:20]}")
    if error is not None:
        return Outcome(ERROR, len(texts), str(error["message"])[:160], error_kind(error))
    if len(texts) != count:
        return Outcome(TRUNCATED, len(texts), f"{len(texts)} of {count} items and a normal end")
    return Outcome(WHOLE, count)


@dataclass
class SoakReport:
    seconds: float
    callers: int
    outcomes: Counter[str] = field(default_factory=Counter)
    #: the error events by what failed
    errors: Counter[str] = field(default_factory=Counter)
    #: a few examples of each outcome other than a whole answer
    examples: dict[str, list[str]] = field(default_factory=dict)
    plugin_kills: int = 0
    restarts: int = 0
    #: seconds from SIGTERM to the restarted daemon's first answer
    restart_seconds: float | None = None
    #: seconds from SIGTERM to the old daemon's exit
    stop_seconds: float | None = None

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values())

    @property
    def ok(self) -> bool:
        return self.outcomes[WHOLE] > 0 and not any(self.outcomes[kind] for kind in UNTRUTHFUL)

    def record(self, outcome: Outcome) -> None:
        self.outcomes[outcome.kind] += 1
        if outcome.error:
            self.errors[outcome.error] += 1
        if outcome.kind != WHOLE:
            examples = self.examples.setdefault(outcome.kind, [])
            if len(examples) < 5:
                examples.append(f"{outcome.items} items: {outcome.detail}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "callers": self.callers,
            "calls": self.calls,
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors.most_common()),
            "examples": self.examples,
            "plugin_kills": self.plugin_kills,
            "restarts": self.restarts,
            "stop_seconds": self.stop_seconds,
            "restart_seconds": self.restart_seconds,
            "ok": self.ok,
        }


class Soak:
    """Drives ``daemon`` (echo_tool installed for TENANT) for ``seconds``; :meth:`run` returns the
    report and leaves :attr:`daemon` (the restarted process) running for the caller to stop."""

    def __init__(
        self,
        daemon: DaemonProcess,
        *,
        callers: int = 64,
        seconds: float = 300.0,
        kill_every: float = 20.0,
        restart: bool = True,
        seed: int = 22,
    ) -> None:
        self.daemon = daemon
        self.callers = callers
        self.seconds = seconds
        self.kill_every = kill_every
        self.restart = restart
        self.random = random.Random(seed)
        self.report = SoakReport(seconds=seconds, callers=callers)
        self._restarting = False

    async def run(self) -> SoakReport:
        ends = time.monotonic() + self.seconds
        limits = httpx.Limits(max_connections=self.callers, max_keepalive_connections=self.callers)
        client = httpx.AsyncClient(base_url=self.daemon.url, headers={"X-Api-Key": KEY}, limits=limits)
        async with client, asyncio.TaskGroup() as group:
            for _ in range(self.callers):
                group.create_task(self._caller(client, ends))
            group.create_task(self._chaos(ends))
        return self.report

    def _shape(self) -> tuple[int, float]:
        """Mostly short calls; one in eight streams for a few seconds (long enough to be cut by a restart)."""
        if self.random.random() < 0.125:
            return self.random.randint(40, 80), 0.05
        return self.random.randint(1, 20), 0.01

    async def _caller(self, client: httpx.AsyncClient, ends: float) -> None:
        while time.monotonic() < ends:
            count, interval = self._shape()
            outcome = await ticks_call(client, count, interval)
            self.report.record(outcome)
            if outcome.kind != WHOLE:
                await asyncio.sleep(0.05)  # a plugin restarting, or the daemon: do not spin

    async def _chaos(self, ends: float) -> None:
        """SIGKILL the plugin every ``kill_every`` seconds; restart the daemon once, half-way."""
        async with asyncio.TaskGroup() as group:
            if self.restart:
                group.create_task(self._restart_daemon(delay=self.seconds / 2))
            while time.monotonic() + self.kill_every < ends:
                await asyncio.sleep(self.kill_every)
                await self._kill_plugin()

    async def _kill_plugin(self) -> None:
        try:
            pids = await self.daemon.plugin_pids()
        except httpx.HTTPError:
            return
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGKILL)
                self.report.plugin_kills += 1
            except ProcessLookupError:
                pass

    async def _restart_daemon(self, delay: float) -> None:
        await asyncio.sleep(delay)
        old = self.daemon
        began = time.monotonic()
        await asyncio.to_thread(old.stop, 60.0)
        self.report.stop_seconds = round(time.monotonic() - began, 2)
        new = DaemonProcess(old.home, old.working_path, env=old.extra_env, port=old.port).start()
        self.daemon = new
        await new.wait_http(120)
        self.report.restarts += 1
        self.report.restart_seconds = round(time.monotonic() - began, 2)
