"""The daemon's benchmark: what it adds per call, its throughput, start-up and memory (issue 7).

    uv run --all-extras python benchmarks/run.py [--json PATH] [--quick] [--loadgen auto|python|wrk]

Everything runs on loopback and is started here: a trivial HTTP server (the load generator's
ceiling), the daemon (``plugin-daemon serve`` in a process of its own, local runtime) with ten
installed plugins, and an OpenAI-compatible upstream for the streamed answer. Daemon and direct
figures come from the same plugin process: for a direct phase the daemon is frozen (SIGSTOP) and
the benchmark talks to the plugin over its own stdin/stdout (``/proc/PID/fd/{0,1}``) with the
SDK's line framing, then the daemon is thawed. Phases alternate (daemon, direct, daemon, ...) so
that a noisy machine hits both sides alike.

Prints a table; ``--json PATH`` writes it as JSON too. Exits 1 when a figure misses its target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLUGINS = ROOT / "tests" / "plugins"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))  # the tests' helpers

from direct import DirectPlugin, DirectPluginError  # noqa: E402
from loadgen import (  # noqa: E402
    HttpConnection,
    HttpTarget,
    LoadResult,
    closed_loop,
    http_caller,
    run_wrk,
    wrk_path,
)
from runtime_rows import OTHER_RUNTIMES, RowContext, registered_runtimes  # noqa: E402

from tests.runtimes.local.local_runtime_support import spec_of_package  # noqa: E402
from tests.support.daemon_process import KEY, TENANT, DaemonProcess, install, upload  # noqa: E402

#: Plugin environments built by the benchmark's daemons, kept between runs.
CACHE = Path(os.environ.get("PLUGIN_DAEMON_BENCH_CACHE", "~/.cache/plugin-daemon-bench")).expanduser()
CONCURRENCY = (1, 8, 64)
ECHO_DATA: dict[str, Any] = {
    "provider": "echo_tool",
    "tool": "echo",
    "tool_parameters": {"text": "hello"},
    "credentials": {},
    "credential_type": "api-key",
}
RESTART_PLUGINS = 10
STREAM_CHUNKS = 200
PACED_CHUNKS, PACED_DELAY = 30, 0.010

console = Console(width=max(150, shutil.get_terminal_size().columns))


# --- the report ------------------------------------------------------------------------------


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    daemon: float | None = None
    direct: float | None = None
    compared: float | None = None  # overhead (daemon - direct) or ratio (daemon / direct), see ``compare``
    compare: str = ""
    target: str = ""
    ok: bool | None = None
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    @property
    def ok(self) -> bool:
        return all(figure.ok is not False for figure in self.figures)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit in ("req/s", "chunks/s"):
        return f"{value:,.0f}"
    if unit == "×":
        return f"{value:.2f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def print_report(report: Report) -> None:
    table = Table(title="plugin-daemon benchmark", show_lines=False)
    for column in ("section", "figure", "unit", "daemon", "direct", "vs direct", "target", "ok"):
        table.add_column(column, justify="right" if column in ("daemon", "direct", "vs direct") else "left")
    section = None
    for figure in report.figures:
        if section is not None and figure.section != section:
            table.add_section()
        compared = ""
        if figure.compared is not None:
            compared = f"{figure.compared:+.2f} ms" if figure.compare == "overhead" else f"{figure.compared:.2f}×"
        mark = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: ""}[figure.ok]
        table.add_row(
            figure.section if figure.section != section else "",
            figure.name + (f" [dim]({figure.note})[/dim]" if figure.note else ""),
            figure.unit,
            _fmt(figure.daemon, figure.unit),
            _fmt(figure.direct, figure.unit),
            compared,
            figure.target,
            mark,
        )
        section = figure.section
    console.print(table)
    for note in report.notes:
        console.print(f"[dim]- {note}[/dim]")
    verdict = "[green]every target met[/green]" if report.ok else "[red]some targets missed[/red]"
    console.print(verdict)


# --- plugins -----------------------------------------------------------------------------------


def packages(workdir: Path) -> dict[str, bytes]:
    """plugin_id -> .difypkg: echo_tool, mock_llm and copies of echo_tool up to ten plugins."""
    from plugin_daemon.packages import build_package

    result = {
        "tester/echo_tool": build_package(PLUGINS / "echo_tool"),
        "tester/mock_llm": build_package(PLUGINS / "mock_llm"),
    }
    for number in range(1, RESTART_PLUGINS - len(result) + 1):
        name = f"bench_echo_{number}"
        folder = workdir / name
        shutil.copytree(PLUGINS / "echo_tool", folder, ignore=shutil.ignore_patterns("__pycache__"))
        manifest = folder / "manifest.yaml"
        manifest.write_text(manifest.read_text().replace("name: echo_tool", f"name: {name}", 1))
        result[f"tester/{name}"] = build_package(folder)
    return result


def echo_target(daemon: DaemonProcess, plugin_id: str = "tester/echo_tool") -> HttpTarget:
    return HttpTarget(
        "127.0.0.1",
        daemon.port,
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        {"X-Api-Key": KEY, "X-Plugin-ID": plugin_id, "Content-Type": "application/json"},
        orjson.dumps({"user_id": "user-1", "data": ECHO_DATA}),
    )


def llm_data(upstream: str, chunks: int, delay: float = 0.0) -> dict[str, Any]:
    return {
        "provider": "mock_llm",
        "model": f"mock-model?chunks={chunks}&delay={delay}",
        "model_type": "llm",
        "credentials": {"endpoint_url": upstream},
        "prompt_messages": [{"role": "user", "content": "hello"}],
        "model_parameters": {},
        "stop": [],
        "tools": [],
        "stream": True,
    }


def direct_data(action_type: str, action: str, data: dict[str, Any]) -> dict[str, Any]:
    """The request ``data`` the daemon would send for a dispatch body's ``data``."""
    return {"user_id": "user-1", "type": action_type, "action": action, **data}


def sse_events(chunks: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """(arrival, event) of every SSE event; one written chunk may carry several."""
    return [(at, event) for at, chunk in chunks for event in chunk.split(b"\n\n") if event]


def check_sse(chunks: list[tuple[float, bytes]]) -> None:
    events = sse_events(chunks)
    if not events or not all(event.startswith(b'data: {"code":0,') for _, event in events):
        raise RuntimeError(f"unexpected answer: {[event[:200] for _, event in events]} (raw chunks: {chunks[:5]})")


def check_direct(messages: list[dict[str, Any]]) -> None:
    if not messages or messages[-1].get("type") != "end" or messages[0].get("type") != "stream":
        raise RuntimeError(f"unexpected answer: {messages[:3]}")


async def answers(client: httpx.AsyncClient, plugin_id: str, upstream: str) -> bool:
    """Does ``plugin_id`` answer a call (echo, or a credentials check for the model plugin)?"""
    if plugin_id == "tester/mock_llm":
        path, data = (
            "model/validate_provider_credentials",
            {"provider": "mock_llm", "credentials": {"endpoint_url": upstream}},
        )
    else:
        path, data = "tool/invoke", ECHO_DATA
    try:
        response = await client.post(
            f"/plugin/{TENANT}/dispatch/{path}",
            headers={"X-Plugin-ID": plugin_id},
            json={"user_id": "user-1", "data": data},
        )
    except httpx.TransportError:
        return False
    return response.status_code == 200 and response.text.startswith('data: {"code":0,')


async def wait_answering(client: httpx.AsyncClient, plugin_ids: list[str], upstream: str, timeout: float) -> float:
    """Seconds until every plugin answers (polled concurrently); raises on timeout."""
    began = time.perf_counter()

    async def one(plugin_id: str) -> None:
        while not await answers(client, plugin_id, upstream):
            if time.perf_counter() - began > timeout:
                raise TimeoutError(f"{plugin_id} did not answer within {timeout} s")
            await asyncio.sleep(0.02)

    await asyncio.gather(*(one(plugin_id) for plugin_id in plugin_ids))
    return time.perf_counter() - began


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Durations:
    latency: float  # the 1-caller window
    load: float  # the 8- and 64-caller windows
    warmup: float
    rounds: int  # daemon/direct alternations
    streams: int  # streamed answers per side
    starts: int  # warm starts measured


FULL = Durations(latency=3.0, load=2.0, warmup=0.3, rounds=2, streams=15, starts=5)
QUICK = Durations(latency=1.0, load=1.0, warmup=0.2, rounds=1, streams=5, starts=1)


async def http_load(target: HttpTarget, callers: int, duration: float, warmup: float) -> LoadResult:
    connections = [await HttpConnection.open(target.host, target.port) for _ in range(callers)]
    raw = target.encode()
    try:
        return await closed_loop(
            [http_caller(c, raw, check_sse) for c in connections], duration=duration, warmup=warmup
        )
    finally:
        for connection in connections:
            await connection.close()


async def direct_load(
    plugin: DirectPlugin, data: dict[str, Any], callers: int, duration: float, warmup: float
) -> LoadResult:
    async def call() -> None:
        check_direct(await plugin.request(data))

    return await closed_loop([call] * callers, duration=duration, warmup=warmup)


#: Plugin processes of our own, by the pid of the daemon's, where its stdio could not be taken over.
_SPAWNED: dict[int, DirectPlugin] = {}


@contextlib.asynccontextmanager
async def direct_to(daemon: DaemonProcess, pid: int, report: Report) -> AsyncIterator[DirectPlugin]:
    """The daemon frozen, the plugin's stdio ours; the daemon thawed afterwards.

    Where the stdio cannot be taken over, a process of our own from the same environment stands in
    (said in the report's notes).
    """
    if pid in _SPAWNED:
        yield _SPAWNED[pid]
        return
    daemon.pause()
    try:
        try:
            plugin = await DirectPlugin.attach(pid, daemon.pid)
        except (DirectPluginError, OSError) as exc:
            daemon.resume()
            report.notes.append(f"direct figures: a separate process from the same environment ({exc})")
            process = psutil.Process(pid)
            env = {"PATH": os.environ["PATH"], "INSTALL_METHOD": "local", "PYTHONUNBUFFERED": "1"}
            _SPAWNED[pid] = await DirectPlugin.spawn(process.cmdline(), Path(process.cwd()), env)
            yield _SPAWNED[pid]
            return
        try:
            yield plugin
        finally:
            await plugin.close()
    finally:
        daemon.resume()


class RssSampler:
    """The peak RSS of a process while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss)
            await asyncio.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def measure_ceiling(tool: str, durations: Durations) -> dict[str, float]:
    """The load generators against a trivial server and a trivial plugin process: what they can do at all."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "trivial_server.py"), str(port)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert server.stdout is not None
        await asyncio.to_thread(server.stdout.readline)
        target = HttpTarget(
            "127.0.0.1", port, "/", {"Content-Type": "application/json"}, orjson.dumps({"data": ECHO_DATA})
        )
        one = await http_load(target, 1, durations.load, durations.warmup)
        result = {"p50_ms_1": one.percentile(0.5) * 1000}
        for callers in (8, 64):
            load = (
                await asyncio.to_thread(run_wrk, target, connections=callers, duration=durations.load)
                if tool == "wrk"
                else await http_load(target, callers, durations.load, durations.warmup)
            )
            result[f"rps_{callers}"] = load.throughput
    finally:
        server.terminate()
        server.wait(5)
    plugin = await DirectPlugin.spawn(
        [sys.executable, str(HERE / "trivial_plugin.py")], HERE, {"PATH": os.environ["PATH"]}
    )
    try:
        data = direct_data("tool", "invoke_tool", ECHO_DATA)
        for callers in (1, 64):
            load = await direct_load(plugin, data, callers, durations.load, durations.warmup)
            result[f"stdio_rps_{callers}"] = load.throughput
    finally:
        await plugin.close()
    return result


async def measure_echo(
    daemon: DaemonProcess, pid: int, tool: str, durations: Durations, report: Report
) -> tuple[dict[str, LoadResult], dict[str, LoadResult], int]:
    """Echo through the daemon and straight to the same process, alternating; best round wins."""
    target = echo_target(daemon)
    data = direct_data("tool", "invoke_tool", ECHO_DATA)
    through: dict[str, list[LoadResult]] = {f"c{c}": [] for c in CONCURRENCY}
    direct: dict[str, list[LoadResult]] = {f"c{c}": [] for c in CONCURRENCY}
    peak = 0
    for _ in range(durations.rounds):
        with RssSampler(daemon.pid) as sampler:
            for callers in CONCURRENCY:
                duration = durations.latency if callers == 1 else durations.load
                if tool == "wrk" and callers > 1:
                    result = await asyncio.to_thread(run_wrk, target, connections=callers, duration=duration)
                else:
                    result = await http_load(target, callers, duration, durations.warmup)
                through[f"c{callers}"].append(result)
        peak = max(peak, sampler.peak)
        async with direct_to(daemon, pid, report) as plugin:
            for callers in CONCURRENCY:
                duration = durations.latency if callers == 1 else durations.load
                direct[f"c{callers}"].append(await direct_load(plugin, data, callers, duration, durations.warmup))
    return _merge(through), _merge(direct), peak


def _merge(results: dict[str, list[LoadResult]]) -> dict[str, LoadResult]:
    """Latencies pooled over the rounds; the throughput of the best round."""
    merged = {}
    for key, rounds in results.items():
        best = max(rounds, key=lambda r: r.throughput)
        merged[key] = LoadResult(best.callers, best.completed, best.seconds, [x for r in rounds for x in r.latencies])
    return merged


@dataclass
class StreamRun:
    first: float  # seconds from the request to the first chunk
    arrivals: list[float]  # seconds from the request to each chunk

    @property
    def rate(self) -> float:
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else float("inf")


async def stream_through(daemon: DaemonProcess, upstream: str, chunks: int, delay: float) -> StreamRun:
    target = HttpTarget(
        "127.0.0.1",
        daemon.port,
        f"/plugin/{TENANT}/dispatch/llm/invoke",
        {"X-Api-Key": KEY, "X-Plugin-ID": "tester/mock_llm", "Content-Type": "application/json"},
        orjson.dumps({"user_id": "user-1", "data": llm_data(upstream, chunks, delay)}),
    )
    connection = await HttpConnection.open(target.host, target.port)
    try:
        events: list[tuple[float, bytes]] = []
        began = time.perf_counter()
        status = await connection.request(target.encode(), events)
    finally:
        await connection.close()
    check_sse(events)
    events = sse_events(events)
    if status != 200 or len(events) != chunks + 1:  # the last chunk carries finish_reason and usage
        raise RuntimeError(f"streamed answer: status {status}, {len(events)} events for {chunks} chunks")
    arrivals = [at - began for at, _ in events]
    return StreamRun(arrivals[0], arrivals)


async def stream_direct(plugin: DirectPlugin, upstream: str, chunks: int, delay: float) -> StreamRun:
    arrivals: list[float] = []

    def on_message(at: float, message: dict[str, Any]) -> None:
        if message.get("type") == "stream":
            arrivals.append(at - began)

    began = time.perf_counter()
    messages = await plugin.request(direct_data("model", "invoke_llm", llm_data(upstream, chunks, delay)), on_message)
    check_direct(messages)
    if len(arrivals) != chunks + 1:
        raise RuntimeError(f"streamed answer: {len(arrivals)} chunks for {chunks}")
    return StreamRun(arrivals[0], arrivals)


async def measure_streams(
    daemon: DaemonProcess, pid: int, upstream: str, durations: Durations, report: Report
) -> dict[str, list[StreamRun]]:
    runs: dict[str, list[StreamRun]] = {"daemon": [], "direct": [], "daemon_paced": [], "direct_paced": []}
    await stream_through(daemon, upstream, 5, 0.0)  # warm: first connection to the upstream
    for _ in range(durations.streams):
        # a short answer first: the daemon has just been thawed and catches up on what its timers missed
        await stream_through(daemon, upstream, 5, 0.0)
        runs["daemon"].append(await stream_through(daemon, upstream, STREAM_CHUNKS, 0.0))
        runs["daemon_paced"].append(await stream_through(daemon, upstream, PACED_CHUNKS, PACED_DELAY))
        async with direct_to(daemon, pid, report) as plugin:
            runs["direct"].append(await stream_direct(plugin, upstream, STREAM_CHUNKS, 0.0))
            runs["direct_paced"].append(await stream_direct(plugin, upstream, PACED_CHUNKS, PACED_DELAY))
    return runs


def chunk_lag(daemon_runs: list[StreamRun], direct_runs: list[StreamRun]) -> float:
    """How much later than straight from the plugin a chunk arrives, counted from its stream's first
    chunk (medians per chunk index over the runs); the largest, in seconds. A chunk held back until
    the next one would lag by a whole interval."""
    lags = []
    for index in range(1, len(daemon_runs[0].arrivals)):
        through = statistics.median(run.arrivals[index] - run.first for run in daemon_runs)
        direct = statistics.median(run.arrivals[index] - run.first for run in direct_runs)
        lags.append(through - direct)
    return max(lags)


async def measure_warm_start(
    spec_of: Callable[[], Any], working_path: Path, home: Path, starts: int, **settings_overrides: Any
) -> list[float]:
    """Launch to ready of an installed plugin whose venv is built, through the local runtime's own code."""
    from plugin_daemon.config import Settings
    from plugin_daemon_local.runtime import LocalRuntime

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        PLUGIN_DAEMON_HOME=home,
        PLUGIN_WORKING_PATH=working_path,
        PLUGIN_READY_TIMEOUT=60.0,
        **settings_overrides,
    )
    spec = spec_of()
    times = []
    for _ in range(starts):
        async with LocalRuntime(settings) as runtime:
            began = time.perf_counter()
            await runtime.ensure_ready(spec, timeout=60)
            times.append(time.perf_counter() - began)
    return times


#: The isolation phase's working path: where plugins under uids of their own can reach their code.
ISOLATION_WORK = Path(tempfile.gettempdir()) / "plugin-daemon-bench-isolation" / "cwd"
#: A Python every uid can run (one under /root is not), for the plugins of the isolation phase.
SHARED_PYTHON = "/usr/bin/python3.11"


async def measure_isolation(
    package: bytes, scratch: Path, tool: str, durations: Durations, report: Report
) -> dict[str, dict[str, float]]:
    """echo_tool with PLUGIN_ISOLATION off and auto: warm start, p50 at 1 caller, throughput at 64."""
    for folder in (ISOLATION_WORK.parent, ISOLATION_WORK):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o711)
    settings: dict[str, str] = {"PYTHON_INTERPRETER_PATH": SHARED_PYTHON} if os.access(SHARED_PYTHON, os.X_OK) else {}
    figures: dict[str, dict[str, float]] = {}
    for mode in ("off", "auto", "off", "auto"):  # alternated: a noisy machine hits both alike
        home = scratch / f"isolation-{mode}"
        env = {"PLUGIN_ISOLATION": mode, "LOG_LEVEL": "INFO", **settings}
        daemon = DaemonProcess(home, ISOLATION_WORK, env=env).start()
        try:
            await daemon.wait_http()
            async with daemon.client(timeout=900) as client:
                await install(client, [await upload(client, package)])
            target = echo_target(daemon)
            latency = await http_load(target, 1, durations.latency, durations.warmup)
            if tool == "wrk":
                load = await asyncio.to_thread(run_wrk, target, connections=64, duration=durations.load)
            else:
                load = await http_load(target, 64, durations.load, durations.warmup)
            if mode == "auto" and "flood" not in figures:
                figures["flood"] = await measure_flood(daemon, target, tool, durations, load.throughput)
            if mode == "auto":
                report.facts["isolation_in_force"] = next(
                    (
                        line.split("plugin isolation: ", 1)[1]
                        for line in daemon.log_tail(20000).splitlines()
                        if "plugin isolation: " in line
                    ),
                    "not logged",
                )
        finally:
            daemon.stop()
        starts = await measure_warm_start(
            lambda: spec_of_package(package, scratch / "isolation-echo.difypkg"),
            ISOLATION_WORK,
            scratch / f"isolation-warm-{mode}",
            durations.starts,
            PLUGIN_ISOLATION=mode,
            **settings,
        )
        best = figures.setdefault(mode, {"start": float("inf"), "p50": float("inf"), "rps": 0.0})
        best["start"] = min(best["start"], statistics.median(starts))
        best["p50"] = min(best["p50"], latency.percentile(0.5))
        best["rps"] = max(best["rps"], load.throughput)
    on, off = figures["auto"], figures["off"]
    for name, key, unit, scale in (
        ("warm plugin start to ready, isolation on vs off", "start", "ms", 1000.0),
        ("echo p50, 1 caller, isolation on vs off", "p50", "ms", 1000.0),
    ):
        report.add(
            Figure(
                "isolation",
                name,
                unit,
                daemon=on[key] * scale,
                direct=off[key] * scale,
                compared=(on[key] - off[key]) * scale,
                compare="overhead",
            )
        )
    report.add(
        Figure(
            "isolation",
            "echo throughput, 64 callers, isolation on vs off",
            "req/s",
            daemon=on["rps"],
            direct=off["rps"],
            compared=on["rps"] / off["rps"] if off["rps"] else None,
            compare="ratio",
        )
    )
    flood = figures["flood"]
    report.add(
        Figure(
            "isolation",
            f"echo throughput, 64 callers, while another plugin writes {FLOOD_MB} MB to stderr vs quiet",
            "req/s",
            daemon=flood["during"],
            direct=flood["quiet"],
            compared=flood["during"] / flood["quiet"] if flood["quiet"] else None,
            compare="ratio",
            target="≥ 0.5×",
            ok=flood["during"] >= 0.5 * flood["quiet"],
            note="'direct' here: the same daemon with no flood",
        )
    )
    return figures


#: What the hostile test plugin writes to stderr in the flood figure (the issue's 29 MB).
FLOOD_MB = 29


async def measure_flood(
    daemon: DaemonProcess, target: HttpTarget, tool: str, durations: Durations, quiet: float
) -> dict[str, float]:
    """Echo throughput at 64 callers while tests/plugins/hostile_tool floods its stderr."""
    from plugin_daemon.packages import build_package

    async with daemon.client(timeout=900) as client:
        await install(client, [await upload(client, build_package(PLUGINS / "hostile_tool"))])
        noise = {"mb": str(FLOOD_MB)}
        flood_data = {**ECHO_DATA, "provider": "hostile_tool", "tool": "noise", "tool_parameters": noise}
        flood = asyncio.create_task(
            client.post(
                f"/plugin/{TENANT}/dispatch/tool/invoke",
                headers={"X-Plugin-ID": "tester/hostile_tool"},
                json={"user_id": "user-1", "data": flood_data},
            )
        )
        await asyncio.sleep(0.5)  # the flood under way (its first megabytes are read at once)
        if tool == "wrk":
            during = await asyncio.to_thread(run_wrk, target, connections=64, duration=durations.load)
        else:
            during = await http_load(target, 64, durations.load, durations.warmup)
        if flood.done():
            raise RuntimeError(f"the stderr flood ended before the measurement did: {flood.result().text[:500]}")
        flood.cancel()  # the daemon stops the plugin with the rest of this phase
        with contextlib.suppress(asyncio.CancelledError):
            await flood
    return {"quiet": quiet, "during": during.throughput}


def sdk_import_times(python: Path, cwd: Path, count: int) -> list[float]:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        # the SDK's gevent complains on stderr at interpreter exit; shown only when the import fails
        done = subprocess.run(
            [str(python), "-c", "import dify_plugin"], cwd=cwd, env={"PATH": os.environ["PATH"]}, capture_output=True
        )
        if done.returncode:
            raise RuntimeError(f"import dify_plugin failed: {done.stderr.decode(errors='replace')[-2000:]}")
        times.append(time.perf_counter() - began)
    return times


def _free_port() -> int:
    from tests.support.daemon_process import free_port

    return free_port()


def plugin_layout(working_path: Path, identifier: str) -> Path:
    author_name, rest = identifier.split(":", 1)
    author, name = author_name.split("/")
    version, checksum = rest.split("@")
    return working_path / author / f"{name}-{version}@{checksum}"


# --- the run ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> Report:
    durations = QUICK if args.quick else FULL
    tool = args.loadgen if args.loadgen != "auto" else ("wrk" if wrk_path() else "python")
    if tool == "wrk" and not wrk_path():
        raise SystemExit("--loadgen wrk: wrk is not installed")
    report = Report()
    loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
    report.facts.update(
        {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_generator": "wrk (8 and 64 callers) + python asyncio (1 caller)"
            if tool == "wrk"
            else "python asyncio",
            "event_loop_of_load_generator": loop_name,
            "quick": bool(args.quick),
        }
    )

    ceiling = await measure_ceiling(tool, durations)
    report.facts["load_generator_ceiling"] = ceiling

    working_path = CACHE / "cwd"
    scratch = Path(tempfile.mkdtemp(prefix="plugin-daemon-bench-"))
    upstream_process = subprocess.Popen(
        [sys.executable, str(HERE / "upstream.py")], stdout=subprocess.PIPE, stdin=subprocess.PIPE, cwd=ROOT
    )
    daemon: DaemonProcess | None = None
    try:
        assert upstream_process.stdout is not None
        upstream = (await asyncio.to_thread(upstream_process.stdout.readline)).decode().strip()
        built = packages(scratch)
        home = scratch / "home"
        daemon = DaemonProcess(home, working_path).start()
        await daemon.wait_http()
        async with daemon.client(timeout=900) as client:
            identifiers = {plugin_id: await upload(client, package) for plugin_id, package in built.items()}
            console.print(f"[dim]installing {len(identifiers)} plugins (environments kept in {working_path})[/dim]")
            await install(client, list(identifiers.values()))
            await wait_answering(client, list(identifiers), upstream, timeout=300)
        await asyncio.sleep(1.0)
        idle_rss = daemon.rss()
        pids = await daemon.plugin_pids()
        echo_pid = pids[identifiers["tester/echo_tool"]]
        llm_pid = pids[identifiers["tester/mock_llm"]]

        console.print("[dim]echo tool: daemon vs direct[/dim]")
        through, direct, load_rss = await measure_echo(daemon, echo_pid, tool, durations, report)
        _echo_figures(report, "echo tool, local", through, direct)
        fastest = max(r.throughput for r in (*through.values(), *direct.values()))
        ceiling_64 = ceiling["rps_64"]
        report.add(
            Figure(
                "load generator",
                f"ceiling at 64 callers vs the fastest figure ({tool})",
                "×",
                daemon=ceiling_64 / fastest,
                target="≥ 3",
                ok=ceiling_64 / fastest >= 3,
                note=f"{ceiling_64:,.0f} req/s against a trivial server",
            )
        )

        direct_64 = direct["c64"].throughput
        report.add(
            Figure(
                "load generator",
                "direct client's ceiling at 64 callers vs the direct figure",
                "×",
                daemon=ceiling["stdio_rps_64"] / direct_64,
                target="≥ 3",
                ok=ceiling["stdio_rps_64"] / direct_64 >= 3,
                note=f"{ceiling['stdio_rps_64']:,.0f} req/s against a trivial plugin process",
            )
        )

        console.print("[dim]streamed LLM answer: daemon vs direct[/dim]")
        streams = await measure_streams(daemon, llm_pid, upstream, durations, report)
        _stream_figures(report, streams)

        plugin_rss = {pid: psutil.Process(pid).memory_info().rss for pid in (await daemon.plugin_pids()).values()}
        markers = {
            i: (plugin_layout(working_path, i) / ".venv/dify/plugin.json").stat().st_mtime_ns
            for i in identifiers.values()
        }
        daemon.stop()

        console.print("[dim]warm start and SDK import[/dim]")
        echo_identifier = identifiers["tester/echo_tool"]
        starts = await measure_warm_start(
            lambda: spec_of_package(built["tester/echo_tool"], scratch / "echo_tool.difypkg"),
            working_path,
            scratch / "warm-home",
            durations.starts,
        )
        layout = plugin_layout(working_path, echo_identifier)
        imports = await asyncio.to_thread(sdk_import_times, layout / ".venv/bin/python", layout, durations.starts)
        start, sdk = statistics.median(starts), statistics.median(imports)
        report.add(
            Figure(
                "start",
                "warm plugin start to ready vs `import dify_plugin`",
                "ms",
                daemon=start * 1000,
                direct=sdk * 1000,
                compared=(start - sdk) * 1000,
                compare="overhead",
                target="≤ +200 ms",
                ok=start - sdk <= 0.2,
            )
        )

        console.print(f"[dim]daemon restart with {len(identifiers)} installed plugins[/dim]")
        daemon = DaemonProcess(home, working_path).start()
        async with daemon.client(timeout=30) as client:
            await wait_answering(client, list(identifiers), upstream, timeout=60)
        restart = time.perf_counter() - daemon.started_at  # from the daemon's launch
        rebuilt = [
            i
            for i, mtime in markers.items()
            if (plugin_layout(working_path, i) / ".venv/dify/plugin.json").stat().st_mtime_ns != mtime
        ]
        report.add(
            Figure(
                "start",
                f"daemon restart, {len(identifiers)} plugins: all answering",
                "s",
                daemon=restart,
                target="≤ 10 s, no reinstall",
                ok=restart <= 10 and not rebuilt,
                note=f"{len(rebuilt)} environments rebuilt",
            )
        )
        daemon.stop()
        daemon = None

        report.add(
            Figure("memory", "daemon RSS, idle", "MB", daemon=idle_rss / 1e6, target="< 100 MB", ok=idle_rss < 100e6)
        )
        report.add(Figure("memory", "daemon RSS, peak under load (64 callers)", "MB", daemon=load_rss / 1e6))
        values = sorted(plugin_rss.values())
        report.add(
            Figure(
                "memory",
                f"plugin RSS, each of {len(values)} (median; min-max)",
                "MB",
                daemon=statistics.median(values) / 1e6,
                note=f"{values[0] / 1e6:.0f}-{values[-1] / 1e6:.0f} MB",
            )
        )
        report.facts["plugin_rss_mb"] = [round(v / 1e6, 1) for v in values]

        if not args.skip_isolation:
            console.print("[dim]isolation on vs off (echo_tool)[/dim]")
            await measure_isolation(built["tester/echo_tool"], scratch, tool, durations, report)

        echo_folder = plugin_layout(working_path, identifiers["tester/echo_tool"])
        await _other_runtimes(
            report, scratch, working_path, (built["tester/echo_tool"], echo_folder), direct, tool, durations
        )
    except BaseException:
        if daemon is not None:  # its log goes with the scratch folder: show its end first
            console.print(f"[red]the benchmark failed; the end of the daemon's log:[/red]\n{daemon.log_tail()}")
        raise
    finally:
        for plugin in _SPAWNED.values():
            await plugin.close()
        if daemon is not None:
            daemon.stop()
        upstream_process.kill()
        upstream_process.wait(5)
        shutil.rmtree(scratch, ignore_errors=True)
    return report


def _echo_figures(
    report: Report, section: str, through: dict[str, LoadResult], direct: dict[str, LoadResult] | None
) -> None:
    one, one_direct = through["c1"], direct["c1"] if direct else None
    for name, fraction in (("p50", 0.5), ("p99", 0.99)):
        value = one.percentile(fraction) * 1000
        floor = one_direct.percentile(fraction) * 1000 if one_direct else None
        is_p50 = fraction == 0.5 and section.endswith("local")
        report.add(
            Figure(
                section,
                f"latency {name}, 1 caller",
                "ms",
                daemon=value,
                direct=floor,
                compared=value - floor if floor is not None else None,
                compare="overhead",
                target="≤ +1 ms" if is_p50 else "",
                ok=(value - floor <= 1.0) if is_p50 and floor is not None else None,
            )
        )
    for callers in CONCURRENCY:
        value = through[f"c{callers}"].throughput
        floor = direct[f"c{callers}"].throughput if direct else None
        gated = callers == 64 and section.endswith("local")
        report.add(
            Figure(
                section,
                f"throughput, {callers} caller{'s' if callers > 1 else ''}",
                "req/s",
                daemon=value,
                direct=floor,
                compared=value / floor if floor else None,
                compare="ratio",
                target="≥ 0.8×" if gated else "",
                ok=(value / floor >= 0.8) if gated and floor else None,
            )
        )


def _stream_figures(report: Report, streams: dict[str, list[StreamRun]]) -> None:
    section = f"streamed LLM, {STREAM_CHUNKS} chunks"
    first = statistics.median(run.first for run in streams["daemon"]) * 1000
    first_direct = statistics.median(run.first for run in streams["direct"]) * 1000
    # the added time is the median of the differences of runs taken side by side (daemon, then direct):
    # the plugin's own time to first chunk drifts by milliseconds between runs far apart
    pairs = zip(streams["daemon"], streams["direct"], strict=True)
    added = statistics.median((through.first - direct.first) * 1000 for through, direct in pairs)
    report.add(
        Figure(
            section,
            "time to first chunk",
            "ms",
            daemon=first,
            direct=first_direct,
            compared=added,
            compare="overhead",
            target="≤ +2 ms",
            ok=added <= 2.0,
        )
    )
    rate = statistics.median(run.rate for run in streams["daemon"])
    rate_direct = statistics.median(run.rate for run in streams["direct"])
    report.add(
        Figure(
            section,
            "chunks per second",
            "chunks/s",
            daemon=rate,
            direct=rate_direct,
            compared=rate / rate_direct,
            compare="ratio",
        )
    )
    lag = chunk_lag(streams["daemon_paced"], streams["direct_paced"]) * 1000
    report.add(
        Figure(
            section,
            f"largest chunk lag, {PACED_CHUNKS} chunks {PACED_DELAY * 1000:.0f} ms apart",
            "ms",
            compared=lag,
            compare="overhead",
            target=f"< {PACED_DELAY * 500:.0f} ms (none held back)",
            ok=lag < PACED_DELAY * 500,
        )
    )


@contextlib.asynccontextmanager
async def _echo_answering(daemon: DaemonProcess) -> AsyncIterator[None]:
    async with daemon.client(timeout=60) as client:
        await wait_answering(client, ["tester/echo_tool"], "", timeout=120)
    yield


async def _other_runtimes(
    report: Report,
    scratch: Path,
    working_path: Path,
    echo: tuple[bytes, Path],
    direct: dict[str, LoadResult],
    tool: str,
    durations: Durations,
) -> None:
    registered = registered_runtimes()
    for row in OTHER_RUNTIMES:
        if row.runtime not in registered:
            report.notes.append(f"{row.title}: skipped, the runtime is not registered here")
            continue
        if row.connect is None:
            report.notes.append(f"{row.title}: skipped, no benchmark adapter (RuntimeRow.connect in runtime_rows.py)")
            continue
        context = RowContext(scratch / row.runtime, working_path, echo[0], echo[1], echo_target, _echo_answering)
        console.print(f"[dim]{row.title}[/dim]")
        try:
            async with row.connect(context) as target:
                through: dict[str, LoadResult] = {}
                for callers in CONCURRENCY:
                    duration = durations.latency if callers == 1 else durations.load
                    if tool == "wrk" and callers > 1:
                        result = await asyncio.to_thread(run_wrk, target, connections=callers, duration=duration)
                    else:
                        result = await http_load(target, callers, duration, durations.warmup)
                    through[f"c{callers}"] = result
            _echo_figures(report, f"echo tool, {row.runtime}", through, direct)
            report.notes.append(f"{row.title}: 'direct' is the local plugin process straight over its stdio")
        except Exception as exc:  # one runtime's row must not sink the others
            report.notes.append(f"{row.title}: failed: {type(exc).__name__}: {exc}")
            report.add(Figure(f"echo tool, {row.runtime}", "benchmark", "", ok=False, note=str(exc)[:80]))


async def run_scale(count: int) -> Report:
    """The rows of ``count`` installed plugins (``--scale``)."""
    from scale import measure_scale

    report = Report()
    report.facts.update({"cpus": os.cpu_count(), "python": platform.python_version(), "scale": count})
    scratch = Path(tempfile.mkdtemp(prefix="plugin-daemon-scale-"))
    working_path = CACHE / "cwd"

    async def warm_start(package: bytes) -> list[float]:
        return await measure_warm_start(
            lambda: spec_of_package(package, scratch / "warm.difypkg"), working_path, scratch / "warm-home", 5
        )

    async def import_time(layout: Path) -> list[float]:
        return await asyncio.to_thread(sdk_import_times, layout / ".venv/bin/python", layout, 5)

    try:
        rows, facts = await measure_scale(
            count, scratch, working_path, PLUGINS / "echo_tool", warm_start, import_time, console.print
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for row in rows:
        report.add(
            Figure(
                f"{count} installed plugins",
                row.name,
                row.unit,
                daemon=row.value,
                direct=row.reference,
                compared=row.value - row.reference if row.reference is not None else None,
                compare="overhead",
                target=row.target,
                ok=row.ok,
                note=row.note,
            )
        )
    report.facts.update(facts)
    return report


def _jsonable(report: Report) -> dict[str, Any]:
    return {
        "command": " ".join(["benchmarks/run.py", *sys.argv[1:]]),
        "ok": report.ok,
        "facts": report.facts,
        "figures": [asdict(figure) for figure in report.figures],
        "notes": report.notes,
    }


def _new_loop() -> Callable[[Awaitable[Report]], Report]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run  # type: ignore[return-value]
    return uvloop.run  # type: ignore[no-any-return]


def soak(seconds: float, json_path: Path | None) -> None:
    from tests.support.soak import Soak, start_soak_daemon

    async def run_soak() -> dict[str, Any]:
        home = Path(tempfile.mkdtemp(prefix="plugin-daemon-soak-")) / "home"
        daemon = await start_soak_daemon(home, CACHE / "cwd")
        console.print(f"[dim]soak: 64 callers for {seconds:g} s (daemon log: {daemon.log_path})[/dim]")
        runner = Soak(daemon, callers=64, seconds=seconds, kill_every=20.0)
        try:
            report = await runner.run()
        finally:
            runner.daemon.stop()
        return {"command": " ".join(["benchmarks/run.py", *sys.argv[1:]]), **report.as_dict()}

    result = _new_loop()(run_soak())  # type: ignore[arg-type]
    table = Table("outcome", "calls", "examples", title=f"soak: {result['calls']} calls in {seconds:g} s")
    for kind, count in sorted(result["outcomes"].items(), key=lambda item: -item[1]):
        table.add_row(kind, f"{count:,}", "\n".join(result["examples"].get(kind, [])[:2]))
    console.print(table)
    for error, count in result["errors"].items():
        console.print(f"  error events {count:>6,}  {error}")
    console.print(
        f"plugin kills {result['plugin_kills']}, daemon restarts {result['restarts']} "
        f"(stopped in {result['stop_seconds']} s, answering again after {result['restart_seconds']} s): "
        + ("every call ended truthfully" if result["ok"] else "[red]SOME CALLS DID NOT END TRUTHFULLY[/red]")
    )
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    sys.exit(0 if result["ok"] else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the table as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="shorter windows, one round (a smoke run)")
    parser.add_argument(
        "--scale",
        type=int,
        metavar="N",
        help="instead of the benchmark: the rows of N installed plugins (memory idle / 5 / N in use, cold call, "
        "restart, disk; benchmarks/scale.py)",
    )
    parser.add_argument("--skip-isolation", action="store_true", help="skip the isolation on vs off phase")
    parser.add_argument("--loadgen", choices=("auto", "python", "wrk"), default="auto", help="auto: wrk when installed")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead of the benchmark: 64 callers for SECONDS, plugin SIGKILLed every 20 s, a daemon restart "
        "half-way; exits 1 if any call was truncated silently (tests/support/soak.py)",
    )
    args = parser.parse_args()
    if args.soak:
        soak(args.soak, args.json)
    began = time.perf_counter()
    report = _new_loop()(run_scale(args.scale) if args.scale else run(args))  # type: ignore[arg-type]
    report.facts["seconds"] = round(time.perf_counter() - began, 1)
    print_report(report)
    generator = report.facts.get("load_generator", "none")
    console.print(f"[dim]{report.facts['seconds']} s; load generator: {generator}[/dim]")
    if args.json:
        args.json.write_text(json.dumps(_jsonable(report), indent=2))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
