"""Plugin isolation: a hostile SDK plugin tries every attack of issue 13, and every one fails.

The daemon runs as operators run it (``plugin-daemon serve`` in a process of its own), once as
root (a uid per plugin, plus Landlock) and once as an unprivileged user the test creates
(Landlock, a non-dumpable daemon). Beside the hostile plugin runs echo_tool, the victim: its
code, its scratch, its process; and a second tenant's storage file. The hostile plugin's tool
reports each attempt as "blocked: ..." or "SUCCEEDED: ..."; legitimate work (temp files, HOME,
echo) still works.
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_daemon.packages import build_package
from plugin_daemon_local import landlock

from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import CACHE, PLUGINS
from tests.support.daemon_server import free_port
from tests.support.waiting import wait_for

#: A Python 3.11 every user can run (the plugins ask for 3.11).
SHARED_PYTHON = "/usr/bin/python3.11"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform != "linux" or landlock.abi_version() < 6, reason="needs Linux with Landlock 6"),
    pytest.mark.skipif(os.geteuid() != 0, reason="runs the daemon as root and as a user it creates"),
    pytest.mark.skipif(not os.access(SHARED_PYTHON, os.X_OK), reason=f"needs {SHARED_PYTHON}"),
]

TENANT = "tenant-isolation"
OTHER_TENANT = "tenant-victim"
USER = "plugin-daemon-test"
FEW_OPEN_FILES = 1024
#: Working paths kept between runs (venvs are built once), where other users can traverse.
KEPT = Path(tempfile.gettempdir()) / f"plugin-daemon-isolation-{abs(hash(str(CACHE))) % 10**8}"


@dataclass
class World:
    url: str
    key: str
    pid: int
    home: Path
    working_path: Path
    log: Path
    client: httpx.Client

    def call(self, plugin: str, tool: str, parameters: dict[str, Any], tenant: str = TENANT) -> list[dict[str, Any]]:
        response = self.client.post(
            f"/plugin/{tenant}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": f"tester/{plugin}"},
            json={
                "user_id": "u",
                "data": {"provider": plugin, "tool": tool, "tool_parameters": parameters, "credentials": {}},
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        events = [json.loads(line[len("data: ") :]) for line in response.text.split("\n") if line]
        assert all(event["code"] == 0 for event in events), events
        return [event["data"] for event in events]

    def json_of(self, plugin: str, tool: str, parameters: dict[str, Any], tenant: str = TENANT) -> Any:
        items = self.call(plugin, tool, parameters, tenant)
        return next(item["message"]["json_object"] for item in items if item["type"] == "json")

    def install(self, plugin: str, tenant: str = TENANT) -> str:
        identifier = envelope(upload(self.client, build_package(PLUGINS / plugin), tenant))["unique_identifier"]
        started = envelope(
            self.client.post(
                f"/plugin/{tenant}/management/install/identifiers",
                json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
            )
        )
        task = wait_task(self.client, started["task_id"], tenant, timeout=600)
        assert task["status"] == "success", json.dumps(task)
        return str(identifier)

    def plugin_pids(self) -> dict[str, int]:
        plugins = self.client.get("/health/check").json()["runtimes"]["local"]["plugins"]
        return {identifier.split(":")[0]: state["pid"] for identifier, state in plugins.items() if state.get("pid")}


def ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True)
        return pwd.getpwnam(USER)


@contextmanager
def serving(mode: str) -> Iterator[World]:
    """``plugin-daemon serve`` as root (mode "root") or as a user created here (mode "user")."""
    user = ensure_user() if mode == "user" else None
    working_path = KEPT / mode / "cwd"
    home = Path(tempfile.mkdtemp(prefix=f"isolation-{mode}-"))
    for folder in (KEPT, KEPT / mode):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o711)
    working_path.mkdir(exist_ok=True)
    if user is not None:
        for folder in (home, KEPT / mode, working_path):
            os.chown(folder, user.pw_uid, user.pw_gid)
    port = free_port()
    log = home / "daemon.log"
    env = {
        **{name: value for name, value in os.environ.items() if name not in ("VIRTUAL_ENV", "SERVER_KEY")},
        "HOME": str(home),
        "PLUGIN_DAEMON_HOME": str(home),
        "PLUGIN_WORKING_PATH": str(working_path),
        "SERVER_PORT": str(port),
        "PLATFORM": "local",
        "PLUGIN_ISOLATION": "required",
        "FORCE_VERIFYING_SIGNATURE": "false",
        "PLUGIN_REMOTE_INSTALLING_PORT": "0",  # a free port: a taken one stops the start
        "PYTHON_INTERPRETER_PATH": SHARED_PYTHON,
        "PLUGIN_READY_TIMEOUT": "60",
        "DB_PASSWORD": "db-secret",
        "DIFY_INNER_API_KEY": "inner-key",
    }
    with log.open("ab") as output:
        process = subprocess.Popen(
            daemon_command(shared=user is not None),
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            preexec_fn=start_with_few_open_files,
        )
    try:
        key_file = home / "server_key"
        wait_for(lambda: key_file.is_file() and key_file.read_text().strip(), 30, "the generated server key")
        key = key_file.read_text().strip()
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-Api-Key": key}, timeout=60)

        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return client.get("/health/check").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 60, "the daemon to answer")
        yield World(client.base_url.__str__(), key, process.pid, home, working_path, log, client)
        client.close()
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def start_with_few_open_files() -> None:
    """The daemon starts with the usual soft limit of 1,024 open files (it raises it itself)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FEW_OPEN_FILES, hard), hard))


def daemon_command(*, shared: bool) -> list[str]:
    """``plugin-daemon serve``; for another user, on a Python it can run, with this environment's packages."""
    if not shared:
        return [sys.executable, "-m", "plugin_daemon.cli", "serve"]
    packages = sysconfig.get_paths()["purelib"]
    code = f"import site, sys; site.addsitedir({packages!r}); sys.argv = ['plugin-daemon', 'serve']; "
    return [SHARED_PYTHON, "-c", code + "from plugin_daemon.cli import cli; cli()"]


def files_under(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


@pytest.fixture(scope="module", params=["root", "user"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    with serving(request.param) as running:
        running.install("echo_tool")
        running.install("echo_tool", OTHER_TENANT)
        running.install("hostile_tool")
        assert running.json_of(
            "echo_tool", "storage", {"op": "set", "key": "secret", "value": "victim data"}, OTHER_TENANT
        )
        yield running


def test_every_attack_fails(world: World) -> None:
    pids = wait_for(lambda: found if len(found := world.plugin_pids()) == 2 else None, 60, "both plugins running")
    victim_pid, hostile_pid = pids["tester/echo_tool"], pids["tester/hostile_tool"]
    assert victim_pid != hostile_pid
    victim = next((world.working_path / "tester").glob("echo_tool-*"))
    hostile = next((world.working_path / "tester").glob("hostile_tool-*"))
    victim_scratch = world.working_path / ".scratch" / "tester" / victim.name
    database = world.home / "plugin_daemon.db"
    storage = files_under(world.home / "persistence")  # the victim tenant's storage file, as Go keeps it
    assert storage
    targets = {
        "read": [
            f"/proc/{world.pid}/environ",
            f"/proc/{world.pid}/mem",
            f"/proc/{victim_pid}/environ",
            database,
            world.home / "server_key",
            *storage,
            victim / "main.py",
            victim_scratch / "home",
        ],
        "write": [
            victim / "main.py",
            hostile / "main.py",  # its own code is read-only too
            victim / ".venv" / "pyvenv.cfg",
            world.home / "planted",
            world.working_path / "planted",
            Path(tempfile.gettempdir()) / f"planted-{os.getpid()}",
        ],
        "list": [victim, victim_scratch, world.working_path / "tester", world.home, world.home / "persistence"],
        "kill": [world.pid, victim_pid],
        "ptrace": [world.pid, victim_pid],
    }
    results = world.json_of("hostile_tool", "attack", {"targets": json.dumps(targets, default=str)})
    assert len(results) == sum(len(items) for items in targets.values())
    succeeded = {attack: outcome for attack, outcome in results.items() if not outcome.startswith("blocked")}
    assert succeeded == {}
    # the victim is alive and unchanged, and still answers
    assert world.plugin_pids()["tester/echo_tool"] == victim_pid
    assert "hostile_tool" not in (victim / "main.py").read_text()
    assert not (Path(tempfile.gettempdir()) / f"planted-{os.getpid()}").exists()
    echoed = world.call("echo_tool", "echo", {"text": "still here"})
    assert echoed[0]["message"]["text"] == "still here"


def test_a_plugin_that_writes_temp_files_and_home_works(world: World) -> None:
    result = world.json_of("hostile_tool", "scratch", {})
    assert result["tmp"] == "temporary" and result["home"] == "home"
    assert result["tmpdir"].startswith(str(world.working_path / ".scratch"))


def test_data_folder_and_process_are_hardened(world: World) -> None:
    home_mode = world.home.stat().st_mode & 0o777
    assert home_mode in (0o700, 0o711)
    assert (world.home / "plugin_daemon.db").stat().st_mode & 0o777 == 0o600
    assert (world.home / "server_key").stat().st_mode & 0o777 == 0o600
    for folder in ("plugin", "plugin_packages", "assets", "persistence"):
        assert (world.home / folder).stat().st_mode & 0o777 == 0o700
    limits = Path(f"/proc/{world.pid}/limits").read_text().splitlines()
    soft, hard = next(line for line in limits if line.startswith("Max open files")).split()[3:5]
    assert soft == hard and int(soft) > FEW_OPEN_FILES
    # non-dumpable: the kernel gives its /proc entries to root, whatever uid the daemon runs under
    assert Path(f"/proc/{world.pid}/environ").stat().st_uid == 0
    wait_for(lambda: "plugin isolation:" in world.log.read_text(), 10, "the isolation line in the log")


def test_a_plugin_flooding_stderr_costs_the_others_little(world: World) -> None:
    """8 MiB on stderr: reading is paced, logging capped; echo_tool keeps answering meanwhile."""
    log_before = world.log.stat().st_size
    flood: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: flood.update(world.json_of("hostile_tool", "noise", {"mb": "8"})))
    thread.start()
    timings = []
    while thread.is_alive() and len(timings) < 200:
        started = time.perf_counter()
        assert world.call("echo_tool", "echo", {"text": "x"})[0]["message"]["text"] == "x"
        timings.append(time.perf_counter() - started)
    thread.join(120)
    assert flood["written"] >= 8 * 1024 * 1024
    assert timings and statistics.median(timings) < 0.5
    logged = world.log.stat().st_size - log_before
    assert logged < 2 * 1024 * 1024  # of 8 MiB: the burst, the rate, and the count of the rest
    wait_for(lambda: "bytes of stderr were not logged" in world.log.read_text(), 30, "the count of unlogged stderr")


def test_many_idle_connections_leave_room_for_everyone(world: World) -> None:
    """1,100 idle connections once made the API refuse everyone (the limit of 1,024 open files)."""
    idle = []
    try:
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", int(world.url.rsplit(":", 1)[1])), timeout=10))
        with httpx.Client(base_url=world.url, timeout=3) as fresh:  # well within SERVER_READ_HEADER_TIMEOUT
            assert fresh.get("/health/check").status_code == 200
        assert world.call("echo_tool", "echo", {"text": "room"})[0]["message"]["text"] == "room"
    finally:
        for connection in idle:
            connection.close()
