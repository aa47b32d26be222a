"""Switching from the Go daemon: plugin-daemon started on the database and storage root the Go daemon
used, with what Go wrote for a local tool plugin (installed in two tenants, an endpoint, a stored key,
install tasks), serves all of it; what it then writes itself is what the Go daemon reads.

On PostgreSQL the schema is built from go_schema_postgres.sql (the Go daemon's AutoMigrate, derived
from its models); on MariaDB it is the one this daemon creates, which test_go_schema holds equal to
Go's on PostgreSQL. The plugin is tests/plugins/echo_tool with an endpoint added: a real SDK plugin in
a real process.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from plugin_daemon.packages import build_package
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import OWN_PREFIX
from sqlalchemy import create_engine, inspect, text

from tests.conformance.suite import Target, call_tool, items_of
from tests.conftest import TEST_KEY
from tests.core.store.go_rows import GoWriter, row_problems
from tests.core.store.test_go_schema import load_go_schema
from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS, make_settings
from tests.support.daemon_server import running_daemon
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

FIRST = "0191f1a2-0000-7000-8000-00000000c001"
SECOND = "0191f1a2-0000-7000-8000-00000000c002"
DEADLINE = 600.0

ENDPOINT_CODE = b"""import json
from collections.abc import Mapping

from dify_plugin import Endpoint
from werkzeug import Request, Response


class Hook(Endpoint):
    def _invoke(self, r: Request, values: Mapping, settings: Mapping) -> Response:
        return Response(json.dumps({"settings": dict(settings), "path": r.path}), content_type="application/json")
"""


def hook_plugin(folder: Path, name: str) -> bytes:
    """tests/plugins/echo_tool, named ``name``, with an endpoint group (one text-input setting)."""
    shutil.copytree(PLUGINS / "echo_tool", folder, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
    manifest = yaml.safe_load((folder / "manifest.yaml").read_text())
    manifest["name"] = name
    manifest["resource"]["permission"]["endpoint"] = {"enabled": True}
    manifest["plugins"]["endpoints"] = ["group/hook.yaml"]
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    (folder / "group").mkdir()
    group = {
        "settings": [{"name": "greeting", "type": "text-input", "required": True, "label": {"en_US": "Greeting"}}],
        "endpoints": ["endpoints/hook.yaml"],
    }
    (folder / "group" / "hook.yaml").write_text(yaml.safe_dump(group))
    (folder / "endpoints").mkdir()
    endpoint = {"path": "/hook", "method": "GET", "extra": {"python": {"source": "endpoints/hook.py"}}}
    (folder / "endpoints" / "hook.yaml").write_text(yaml.safe_dump(endpoint))
    (folder / "endpoints" / "hook.py").write_bytes(ENDPOINT_CODE)
    return build_package(folder)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def go_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database as the Go daemon's AutoMigrate leaves it (on SQLite: the same table shapes)."""
    if request.param == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        load_go_schema(url)
        return url
    url = request.getfixturevalue("mysql_url") if request.param == "mysql" else f"sqlite:///{tmp_path / 'go.db'}"
    Database(url).dispose()
    engine = create_engine(url)
    with engine.begin() as connection:  # keep Go's tables only
        for name in inspect(connection).get_table_names():
            if name.startswith(OWN_PREFIX):
                connection.execute(text(f"DROP TABLE {name}"))
    engine.dispose()
    return url


def tool(client: httpx.Client, tenant: str, plugin_id: str, name: str, parameters: dict[str, Any]) -> list[Any]:
    return items_of(call_tool(Target(client, tenant), name, parameters, plugin_id=plugin_id))


def answers(client: httpx.Client, tenant: str, plugin_id: str) -> bool:
    events = call_tool(Target(client, tenant), "echo", {"text": "hi"}, plugin_id=plugin_id)
    return all(event["code"] == 0 for event in events) and bool(events)


@pytest.fixture
def inner_api() -> Iterator[DifyInnerAPI]:
    with DifyInnerAPI(key="inner-key") as api:
        yield api


def test_a_go_daemons_database_and_storage_are_served_and_kept_readable_by_go(
    go_database: str, tmp_path: Path, inner_api: DifyInnerAPI
) -> None:
    root = tmp_path / "storage"
    package = hook_plugin(tmp_path / "go_hooks", "go_hooks")
    engine = create_engine(go_database)
    with engine.begin() as connection:
        go = GoWriter(connection, root)
        identifier, _ = go.package(package, [FIRST, SECOND])
        plugin_id = "tester/go_hooks"
        endpoint_id, hook_id = go.endpoint(FIRST, plugin_id, {"greeting": "hello from go"})
        go.stored_key(FIRST, plugin_id, "color", b"blue")
    engine.dispose()

    settings = make_settings(
        tmp_path / "home",
        PLUGIN_STORAGE_LOCAL_ROOT=root,
        DATABASE_URL=go_database,
        SERVER_KEY=TEST_KEY,
        PLATFORM="local",
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_INNER_API_KEY="inner-key",
    )
    with running_daemon(settings) as server:
        client = server.client
        for tenant in (FIRST, SECOND):  # every installation of every tenant is listed and answers
            listing = envelope(client.get(f"/plugin/{tenant}/management/list", params={"page": 1, "page_size": 10}))
            assert [entry["plugin_unique_identifier"] for entry in listing["list"]] == [identifier]
            wait_for(lambda tenant=tenant: answers(client, tenant, plugin_id), DEADLINE, f"{plugin_id} in {tenant}")
        hooked = httpx.get(f"{server.url}/e/{hook_id}/hook", timeout=60).json()
        assert hooked == {"settings": {"greeting": "hello from go"}, "path": "/hook"}
        listed = envelope(client.get(f"/plugin/{FIRST}/endpoint/list", params={"page": 1, "page_size": 10}))
        assert [(item["id"], item["hook_id"], item["settings"]) for item in listed] == [
            (endpoint_id, hook_id, {"greeting": "hello from go"})
        ]
        stored = tool(client, FIRST, plugin_id, "storage", {"op": "get", "key": "color"})
        assert stored[0]["message"]["json_object"] == {"value": "blue"}
        tasks = envelope(client.get(f"/plugin/{FIRST}/management/install/tasks", params={"page": 1, "page_size": 10}))
        assert [(task["status"], task["plugins"][0]["plugin_unique_identifier"]) for task in tasks] == [
            ("success", identifier)
        ]

        # what this daemon writes: another plugin, an endpoint, a key
        second_package = hook_plugin(tmp_path / "py_hooks", "py_hooks")
        second = envelope(upload(client, second_package, FIRST))["unique_identifier"]
        started = envelope(
            client.post(
                f"/plugin/{FIRST}/management/install/identifiers",
                json={"plugin_unique_identifiers": [second], "source": "package", "metas": [{}]},
            )
        )
        assert wait_task(client, started["task_id"], FIRST, timeout=DEADLINE)["status"] == "success"
        setup = client.post(
            f"/plugin/{FIRST}/endpoint/setup",
            json={"plugin_unique_identifier": second, "user_id": "u1", "settings": {"greeting": "hi"}, "name": "py"},
        )
        assert envelope(setup) is True
        tool(client, FIRST, "tester/py_hooks", "storage", {"op": "set", "key": "shape", "value": "round"})
        tool(client, FIRST, plugin_id, "storage", {"op": "set", "key": "color", "value": "green"})
    markers = sorted(settings.working_path.glob("tester/*hooks*/.venv/dify/plugin.json"))
    built = {marker: marker.stat().st_mtime_ns for marker in markers}

    with running_daemon(settings) as server:  # a restart: nothing is reinstalled, all still answers
        client = server.client
        for tenant, plugin in ((FIRST, plugin_id), (SECOND, plugin_id), (FIRST, "tester/py_hooks")):
            wait_for(lambda t=tenant, p=plugin: answers(client, t, p), DEADLINE, f"{plugin} in {tenant}")
        tasks = envelope(client.get(f"/plugin/{FIRST}/management/install/tasks", params={"page": 1, "page_size": 10}))
        assert len(tasks) == 2
        stored = tool(client, FIRST, "tester/py_hooks", "storage", {"op": "get", "key": "shape"})
        assert stored[0]["message"]["json_object"] == {"value": "round"}
    assert len(built) >= 2 and {marker: marker.stat().st_mtime_ns for marker in markers} == built

    # the Go daemon's view: files where its buckets look, rows its models read
    assert (root / "plugin_packages" / second).read_bytes() == second_package
    assert (root / "plugin" / second).read_bytes() == second_package
    assert (root / "persistence" / FIRST / "tester" / "py_hooks" / "shape").read_bytes() == b"round"
    assert (root / "persistence" / FIRST / "tester" / "go_hooks" / "color").read_bytes() == b"green"
    engine = create_engine(go_database)
    with engine.connect() as connection:
        checked, problems = row_problems(connection)
        counts = dict(
            connection.execute(
                text("SELECT plugin_id, SUM(size) FROM tenant_storages WHERE tenant_id = :t GROUP BY plugin_id"),
                {"t": FIRST},
            ).all()
        )
        endpoints = connection.execute(text("SELECT COUNT(*) FROM endpoints WHERE tenant_id = :t"), {"t": FIRST})
        endpoint_count = endpoints.scalar()
    engine.dispose()
    assert problems == []
    assert checked >= 14
    assert {name: int(size) for name, size in counts.items()} == {"tester/go_hooks": 5, "tester/py_hooks": 5}
    assert endpoint_count == 2


def test_the_row_check_finds_what_go_could_not_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'check.db'}"
    Database(url).dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        go = GoWriter(connection, tmp_path / "root")
        go.insert(
            "endpoints",
            name="x",
            hook_id=None,
            tenant_id=FIRST,
            user_id="u",
            plugin_id="a/b",
            expired_at=go.now,
            enabled=True,
            settings="[1]",
        )
        go.insert(
            "install_tasks",
            status="success",
            tenant_id="not-a-uuid",
            total_plugins=1,
            completed_plugins=1,
            plugins='[{"plugin_unique_identifier": "a/b:1@c", "labels": "x"}]',
        )
        _, problems = row_problems(connection)
    engine.dispose()
    text_of = "\n".join(problems)
    assert "hook_id is NULL" in text_of
    assert "settings: not an object" in text_of
    assert "tenant_id = 'not-a-uuid' is not a UUID" in text_of
    assert "plugins[0].labels is not a dict" in text_of and "plugins[0].icon is not a str" in text_of
