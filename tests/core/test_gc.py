"""``plugin-daemon gc``: lists (--dry-run) and removes the working folders no installation needs,
keeps those of installed plugins, and refuses to remove anything while the daemon answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from plugin_daemon.cli import cli
from plugin_daemon.config import Settings
from plugin_daemon.packages import build_package

from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope, upload, wait_task
from tests.support.daemon_server import free_port, running_daemon

ECHO_TOOL = Path(__file__).parents[1] / "plugins" / "echo_tool"


def test_gc_removes_only_what_no_installation_uses(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(PLATFORM="memory")
    with running_daemon(settings) as server:
        identifier = envelope(upload(server.client, build_package(ECHO_TOOL), "t1"))["unique_identifier"]
        started = envelope(
            server.client.post(
                "/plugin/t1/management/install/identifiers",
                json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
            )
        )
        assert wait_task(server.client, started["task_id"], "t1")["status"] == "success"
    name_version, _, checksum = identifier.partition("/")[2].partition("@")
    working = settings.working_path
    kept = working / "tester" / f"{name_version.replace(':', '-')}@{checksum}"
    gone = working / "tester" / "uninstalled-0.0.1@0123abcd"
    failed = working / "other" / "failed-1.0.0@4567ef89"
    for folder in (kept / ".venv", gone / ".venv", failed, working / ".uv-cache" / "wheels"):
        folder.mkdir(parents=True)
    (gone / ".venv" / "big").write_bytes(b"x" * 2**20)
    env = {
        "PLUGIN_DAEMON_HOME": str(settings.home),
        "SERVER_KEY": TEST_KEY,
        "SERVER_PORT": str(free_port()),
        "PLUGIN_REMOTE_INSTALLING_PORT": "0",
    }

    dry = CliRunner().invoke(cli, ["gc", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert f"would remove {gone} (1.0 MiB)" in dry.output and f"would remove {failed}" in dry.output
    assert str(kept) not in dry.output and ".uv-cache" not in dry.output
    assert "2 folder(s), would free 1.0 MiB" in dry.output
    assert gone.is_dir() and failed.is_dir()

    with running_daemon(settings) as server:
        refused = CliRunner().invoke(cli, ["gc"], env={**env, "SERVER_PORT": str(server.port)})
        assert refused.exit_code == 1 and "stop it first" in refused.output
        assert gone.is_dir()

    done = CliRunner().invoke(cli, ["gc"], env=env)
    assert done.exit_code == 0, done.output
    assert not gone.exists() and not failed.exists()
    assert kept.is_dir() and (working / ".uv-cache" / "wheels").is_dir()
