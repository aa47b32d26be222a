"""A daemon restart: plugin processes stop with the daemon, come back without a reinstall, and
plugin storage is still there."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.conformance.suite import Target, call_tool, items_of
from tests.core.test_management_api import envelope
from tests.runtimes.local.test_local_http import TENANT, install, local_settings
from tests.support.daemon_server import running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


def marker_of(settings, identifier: str) -> Path:  # type: ignore[no-untyped-def]
    author_name, rest = identifier.split(":", 1)
    author, name = author_name.split("/")
    version, checksum = rest.split("@")
    return settings.working_path / author / f"{name}-{version}@{checksum}" / ".venv" / "dify" / "plugin.json"


def test_restart_relaunches_without_reinstall_and_keeps_storage(tmp_path: Path) -> None:
    with DifyInnerAPI(key="inner-key") as inner_api:
        settings = local_settings(tmp_path / "home", inner_api)
        with running_daemon(settings) as first:
            identifier = install(first, "echo_tool")
            target = Target(first.client, TENANT)
            assert items_of(call_tool(target, "storage", {"op": "set", "key": "kept", "value": "across restarts"}))
            pid = items_of(call_tool(target, "pid"))[0]["message"]["json_object"]["pid"]
            marker = marker_of(settings, identifier)
            built_at = marker.stat().st_mtime_ns
        # stopping the daemon stops its plugin processes
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 15, "plugin exit")

        with running_daemon(local_settings(tmp_path / "home", inner_api)) as second:
            target = Target(second.client, TENANT)
            listing = envelope(
                second.client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 9})
            )
            assert [entry["plugin_unique_identifier"] for entry in listing["list"]] == [identifier]
            assert items_of(call_tool(target, "echo", {"text": "again"}))[0]["message"] == {"text": "again"}
            got = items_of(call_tool(target, "storage", {"op": "get", "key": "kept"}))
            assert got[0]["message"]["json_object"] == {"value": "across restarts"}
            new_pid = items_of(call_tool(target, "pid"))[0]["message"]["json_object"]["pid"]
            assert new_pid != pid
        assert marker.stat().st_mtime_ns == built_at, "the environment was rebuilt on restart"
