"""``plugin-daemon serve`` as PID 1 (a container without an init): real SDK plugins still answer.

The SDK exits when its parent is PID 1, so the daemon, finding itself PID 1, forks and runs as
PID 1's child; PID 1 forwards signals and reaps. Run in a fresh PID namespace.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from plugin_daemon.packages import build_package

from tests.conformance.suite import Target, call_tool, items_of
from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS, SHARED_WORK
from tests.support.daemon_server import free_port
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.namespaced_daemon import NamespacedDaemon, descendants, namespace_pids, require_unshare

pytestmark = pytest.mark.slow

TENANT = "tenant-pid1"
TINI = ("/usr/bin/tini", "-g", "--")


@pytest.mark.parametrize("init", [(), TINI], ids=["serve-is-pid-1", "under-tini"])
def test_serve_as_pid_1_runs_the_daemon_as_a_child_and_plugins_answer(
    tmp_path: Path, inner_api: DifyInnerAPI, init: tuple[str, ...]
) -> None:
    """As PID 1 itself, or under tini as the image runs it (docker/Dockerfile's ENTRYPOINT)."""
    require_unshare()
    if init and not Path(init[0]).exists():
        pytest.skip(f"{init[0]} is not installed (apt-get install tini)")
    environ = {
        "SERVER_HOST": "127.0.0.1",
        "SERVER_PORT": str(free_port()),
        "SERVER_KEY": TEST_KEY,
        "PLUGIN_STORAGE_LOCAL_ROOT": str(tmp_path / "storage"),
        "PLUGIN_WORKING_PATH": str(SHARED_WORK),
        "PLUGIN_REMOTE_INSTALLING_PORT": str(free_port()),
        "DIFY_INNER_API_URL": inner_api.url,
        "DIFY_INNER_API_KEY": "inner-key",
        "FORCE_VERIFYING_SIGNATURE": "false",  # echo_tool is a local, unsigned build
    }
    daemon = NamespacedDaemon(environ, tmp_path / "daemon.log", tmp_path, init=init).start()
    try:
        with httpx.Client(base_url=daemon.url, headers={"X-Api-Key": TEST_KEY}, timeout=120) as client:
            identifier = envelope(upload(client, build_package(PLUGINS / "echo_tool"), TENANT))["unique_identifier"]
            started = envelope(
                client.post(
                    f"/plugin/{TENANT}/management/install/identifiers",
                    json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
                )
            )
            assert wait_task(client, started["task_id"], TENANT, timeout=600)["status"] == "success"
            for _ in range(3):
                answer = items_of(call_tool(Target(client, TENANT), "echo", {"text": "as pid 1"}))
                assert answer[0]["message"]["text"] == "as pid 1"

        init = daemon.init_pid()
        assert namespace_pids(init)[-1] == 1
        (serving,) = [pid for pid in descendants(init) if _parent(pid) == init]
        assert namespace_pids(serving)[-1] != 1
        plugins = [pid for pid in descendants(init) if b"\0-m\0main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert plugins, "no plugin process under the daemon"
        for plugin in plugins:
            assert namespace_pids(_parent(plugin))[-1] != 1  # what the SDK checks: its parent is not PID 1
    finally:
        status = daemon.stop()
    # SIGTERM reached the daemon through PID 1: a graceful stop (uvicorn then ends by the signal, 143)
    assert status in (0, 128 + signal.SIGTERM), daemon.log()[-4000:]
    assert "Application shutdown complete" in daemon.log()
    assert "restart" not in daemon.log().lower()


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])
