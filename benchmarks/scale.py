"""The cost of many installed plugins (issue 18): ``benchmarks/run.py --scale N``.

N generated copies of the echo tool plugin (one name each, so one environment each, all built from
the shared uv cache) are installed on a daemon process; then, on a daemon started again (nothing
runs: plugins start on their first call):

- memory: the daemon's RSS plus the proportional set size (PSS, ``/proc/PID/smaps_rollup``: shared
  pages counted once) of every plugin process, with all idle, then 5 in use, then all N in use;
- cold call: time to the first byte of a call to a stopped plugin, against a warm call, against the
  warm start of today (launch to ready through the runtime) and against ``import dify_plugin``;
- 32 concurrent calls to one stopped plugin, then a call to every plugin: none may fail;
- daemon restart with N installed until calls answer; disk used by the N environments.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

from tests.support.daemon_process import TENANT, DaemonProcess, install, upload

#: Idle timeout of the measuring daemons: long enough that nothing stops during the run.
MEASURE_IDLE_TIMEOUT = 3600
#: Idle timeout of the installing daemon.
INSTALL_IDLE_TIMEOUT = 5
#: Plugins per install task.
INSTALL_BATCH = 50
#: Plugins in use in the "few in use" row.
FEW = 5
#: Cold calls measured (each to another stopped plugin).
COLD_SAMPLES = 9
WARM_SAMPLES = 30
#: Callers at once when every plugin is called.
SPREAD = 8
ECHO = {"tool": "echo", "tool_parameters": {"text": "hello"}, "credentials": {}, "credential_type": "api-key"}


@dataclass
class Row:
    name: str
    unit: str
    value: float
    reference: float | None = None  # what the value is compared with (the "direct" column)
    target: str = ""
    ok: bool | None = None
    note: str = ""


def scale_packages(workdir: Path, source: Path, count: int) -> dict[str, bytes]:
    """plugin_id -> .difypkg of ``count`` copies of the plugin in ``source``, each with its own name."""
    from plugin_daemon.packages import build_package

    result = {}
    for number in range(1, count + 1):
        name = f"scale_echo_{number}"
        folder = workdir / name
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("__pycache__"))
        for path in (folder / "manifest.yaml", folder / "provider" / "echo_tool.yaml"):
            path.write_text(path.read_text().replace("name: echo_tool", f"name: {name}", 1))
        result[f"tester/{name}"] = build_package(folder)
    return result


def pss(pid: int) -> int:
    """Proportional set size of ``pid`` and its descendants, in bytes."""
    total = 0
    try:
        pids = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return 0
    for one in pids:
        try:
            with open(f"/proc/{one}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


async def memory(daemon: DaemonProcess) -> tuple[int, int, int, int]:
    """(daemon RSS, sum of plugin PSS, sum of plugin RSS, plugin processes)."""
    pids = list((await daemon.plugin_pids()).values())
    rss = 0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += psutil.Process(pid).memory_info().rss
    return daemon.rss(), sum(pss(pid) for pid in pids), rss, len(pids)


async def first_byte(client: httpx.AsyncClient, plugin_id: str) -> float:
    """Seconds to the first byte of an echo call's answer; raises unless the answer is a success."""
    provider = plugin_id.split("/", 1)[1]
    body = orjson.dumps({"user_id": "user-1", "data": {"provider": provider, **ECHO}})
    began = time.perf_counter()
    async with client.stream(
        "POST",
        f"/plugin/{TENANT}/dispatch/tool/invoke",
        headers={"X-Plugin-ID": plugin_id, "Content-Type": "application/json"},
        content=body,
    ) as response:
        chunks = response.aiter_bytes()
        first = await chunks.__anext__()
        elapsed = time.perf_counter() - began
        rest = b"".join([chunk async for chunk in chunks])
    answer = first + rest
    if response.status_code != 200 or not answer.startswith(b'data: {"code":0,') or b'"code":-' in answer:
        raise RuntimeError(f"{plugin_id}: {response.status_code} {answer[:300]!r}")
    return elapsed


def disk_usage(folders: list[Path]) -> tuple[int, int]:
    """(bytes counting each environment alone, bytes with files shared between them counted once)."""
    alone = 0
    for folder in folders:
        done = subprocess.run(["du", "-sb", str(folder)], capture_output=True, text=True, check=True)
        alone += int(done.stdout.split()[0])
    together = subprocess.run(["du", "-scb", *map(str, folders)], capture_output=True, text=True, check=True)
    return alone, int(together.stdout.strip().splitlines()[-1].split()[0])


async def measure_scale(
    count: int,
    scratch: Path,
    working_path: Path,
    source: Path,
    warm_start: Callable[[bytes], Awaitable[list[float]]],
    import_time: Callable[[Path], Awaitable[list[float]]],
    log: Callable[[str], None],
) -> tuple[list[Row], dict[str, Any]]:
    """The scale rows. ``warm_start(package)`` (launch to ready, seconds) and ``import_time(layout)``
    (``import dify_plugin`` in the environment of ``layout``) give the reference figures."""
    rows: list[Row] = []
    facts: dict[str, Any] = {}
    built = scale_packages(scratch / "packages", source, count)
    home = scratch / "scale-home"
    env = {"PLUGIN_IDLE_TIMEOUT": str(MEASURE_IDLE_TIMEOUT)}
    # installing starts each plugin once (an install is successful when the plugin answers): a short
    # idle timeout stops them again instead of holding all of them until the end of the install
    daemon = DaemonProcess(home, working_path, env={"PLUGIN_IDLE_TIMEOUT": str(INSTALL_IDLE_TIMEOUT)}).start()
    failures: list[str] = []
    try:
        await daemon.wait_http()
        async with daemon.client(timeout=3600) as client:
            identifiers = {plugin_id: await upload(client, package) for plugin_id, package in built.items()}
            log(f"installing {count} plugins (environments kept in {working_path})")
            began = time.perf_counter()
            batch = list(identifiers.values())
            for first in range(0, len(batch), INSTALL_BATCH):  # one install task takes at most 64
                await install(client, batch[first : first + INSTALL_BATCH], timeout=3600)
            facts["install_seconds"] = round(time.perf_counter() - began, 1)
        daemon.stop()

        log(f"daemon restart with {count} installed: nothing starts until called")
        daemon = DaemonProcess(home, working_path, env=env).start()
        plugin_ids = list(identifiers)
        async with daemon.client(timeout=120) as client:
            await daemon.wait_http()
            http_up = time.perf_counter() - daemon.started_at
            await asyncio.sleep(1.0)  # the daemon settles (relaunch pass, first health)
            idle = await memory(daemon)
            colds = [await first_byte(client, plugin_id) for plugin_id in plugin_ids[:FEW]]
            warm = [await first_byte(client, plugin_ids[0]) for _ in range(WARM_SAMPLES)]
            few = await memory(daemon)
            colds += [await first_byte(client, plugin_id) for plugin_id in plugin_ids[FEW : FEW + COLD_SAMPLES - FEW]]

            log("32 concurrent calls to a stopped plugin, then a call to every plugin")
            crowd = plugin_ids[COLD_SAMPLES]
            results = await asyncio.gather(*(first_byte(client, crowd) for _ in range(32)), return_exceptions=True)
            failures += [f"{crowd}: {result}" for result in results if isinstance(result, BaseException)]
            limiter = asyncio.Semaphore(SPREAD)

            async def call(plugin_id: str) -> None:
                async with limiter:
                    try:
                        await first_byte(client, plugin_id)
                    except Exception as exc:
                        failures.append(f"{plugin_id}: {exc}")

            began = time.perf_counter()
            await asyncio.gather(*(call(plugin_id) for plugin_id in plugin_ids))
            all_started = time.perf_counter() - began
            everything = await memory(daemon)
            health = await daemon.health()
        daemon.stop()

        log("daemon restart: until calls answer")
        daemon = DaemonProcess(home, working_path, env=env).start()
        async with daemon.client(timeout=120) as client:
            await daemon.wait_http()
            picked = plugin_ids[-FEW:]
            await asyncio.gather(*(first_byte(client, plugin_id) for plugin_id in picked))
            restart = time.perf_counter() - daemon.started_at
        daemon.stop()
    finally:
        daemon.stop()

    log("references: warm start, import dify_plugin; disk")
    layout = _layout(working_path, identifiers[plugin_ids[0]])
    start = statistics.median(await warm_start(built[plugin_ids[0]]))
    sdk = statistics.median(await import_time(layout))
    folders = [_layout(working_path, identifier) for identifier in identifiers.values()]
    alone, together = disk_usage(folders)

    mb = 1e6
    cold, warm_ms = statistics.median(colds), statistics.median(warm)
    for label, (daemon_rss, plugin_pss, plugin_rss, processes) in (
        ("all idle", idle),
        (f"{FEW} in use", few),
        (f"{count} in use", everything),
    ):
        total = daemon_rss + plugin_pss
        target, ok = ("< 600 MB", total < 600 * mb) if label == f"{FEW} in use" else ("", None)
        rows.append(
            Row(
                f"daemon RSS + plugin PSS, {label}",
                "MB",
                total / mb,
                target=target,
                ok=ok,
                note=f"daemon {daemon_rss / mb:.0f} MB, {processes} plugin processes: PSS {plugin_pss / mb:.0f} MB,"
                f" RSS {plugin_rss / mb:.0f} MB",
            )
        )
    rows.append(
        Row(
            "cold call (first byte, stopped plugin) vs warm start of today",
            "ms",
            cold * 1000,
            start * 1000,
            target="≤ +100 ms",
            ok=cold - start <= 0.1,
            note=f"min {min(colds) * 1000:.0f}, max {max(colds) * 1000:.0f} ms over {len(colds)}",
        )
    )
    rows.append(Row("warm call (first byte)", "ms", warm_ms * 1000))
    rows.append(Row("`import dify_plugin` (a fresh interpreter)", "ms", sdk * 1000))
    rows.append(
        Row(
            "calls lost or failed (32 at once to a stopped plugin, then one to each)",
            "calls",
            float(len(failures)),
            target="0",
            ok=not failures,
            note=f"all {count} started in {all_started:.1f} s, {SPREAD} callers at once",
        )
    )
    rows.append(
        Row(
            f"daemon restart, {count} installed: {FEW} cold calls answered",
            "s",
            restart,
            target="≤ 10 s",
            ok=restart <= 10,
            note=f"HTTP up after {http_up:.2f} s",
        )
    )
    rows.append(
        Row(
            f"disk, {count} environments",
            "MB",
            together / mb,
            note=f"{alone / mb:.0f} MB if nothing were shared (uv hardlinks from its cache)",
        )
    )
    facts.update(
        {
            "cold_call_ms": [round(c * 1000) for c in colds],
            "failures": failures[:10],
            "plugin_states": _states(health),
        }
    )
    return rows, facts


def _states(health: dict[str, Any]) -> dict[str, int]:
    found: dict[str, int] = {}
    for plugin in health.get("runtimes", {}).get("local", {}).get("plugins", {}).values():
        found[plugin["state"]] = found.get(plugin["state"], 0) + 1
    return found


def _layout(working_path: Path, identifier: str) -> Path:
    author_name, rest = identifier.split(":", 1)
    author, name = author_name.split("/")
    version, checksum = rest.split("@")
    return working_path / author / f"{name}-{version}@{checksum}"
