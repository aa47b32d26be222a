"""Issue 22, end to end: twenty calls of a real plugin store at once on a (tenant, plugin) that has
never stored anything: every call gets its answer promptly, the quota (1 MiB, the plugin's declared
storage size) holds, and the usage count is the bytes on disk. Three rounds here (ten rounds of the
same on the storage itself, on every database, are in tests/core/backwards/test_storage.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_daemon.packages import build_package
from sqlalchemy import create_engine, text

from tests.conformance.suite import PLUGIN_ID, Target, call_tool
from tests.conftest import TEST_KEY
from tests.core.test_management_api import envelope, upload, wait_task
from tests.runtimes.local.local_runtime_support import PLUGINS, make_settings
from tests.support.daemon_server import running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = pytest.mark.slow

WRITERS, ROUNDS, VALUE_SIZE, QUOTA = 20, 3, 100_000, 1_048_576
CALL_DEADLINE = 60.0


@pytest.fixture
def inner_api() -> Iterator[DifyInnerAPI]:
    with DifyInnerAPI(key="inner-key") as api:
        yield api


def outcome(events: list[dict[str, Any]]) -> str:
    if all(event["code"] == 0 for event in events) and events:
        return "ok"
    message = events[-1]["message"] if events else "no answer"
    return "over" if "quota" in message else f"error: {message}"


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_parallel_first_writes_of_a_plugin_answer_and_keep_the_quota(
    database: str, request: pytest.FixtureRequest, tmp_path: Path, inner_api: DifyInnerAPI
) -> None:
    database_url = (
        f"sqlite:///{tmp_path / 'calls.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    )
    settings = make_settings(
        tmp_path / "home",
        DATABASE_URL=database_url,
        SERVER_KEY=TEST_KEY,
        PLATFORM="local",
        DIFY_INNER_API_URL=inner_api.url,
        DIFY_INNER_API_KEY="inner-key",
    )
    with running_daemon(settings) as server:
        tenants = [f"0191f1a2-0000-7000-8000-0000000d{number:04d}" for number in range(ROUNDS)]
        identifier = envelope(upload(server.client, build_package(PLUGINS / "echo_tool"), tenants[0]))[
            "unique_identifier"
        ]
        for tenant in tenants:
            started = envelope(
                server.client.post(
                    f"/plugin/{tenant}/management/install/identifiers",
                    json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
                )
            )
            assert wait_task(server.client, started["task_id"], tenant, timeout=600)["status"] == "success"

        for tenant in tenants:
            start = threading.Barrier(WRITERS)

            def write(writer: int, tenant: str = tenant, start: threading.Barrier = start) -> str:
                with httpx.Client(
                    base_url=server.url, headers={"X-Api-Key": TEST_KEY}, timeout=CALL_DEADLINE
                ) as client:
                    start.wait(timeout=30)
                    parameters = {"op": "set", "key": f"key-{writer}", "value": chr(65 + writer) * VALUE_SIZE}
                    return outcome(call_tool(Target(client, tenant), "storage", parameters))

            with ThreadPoolExecutor(WRITERS) as pool:
                outcomes = list(pool.map(write, range(WRITERS)))
            assert sorted(set(outcomes)) == ["ok", "over"], outcomes
            assert outcomes.count("ok") == QUOTA // VALUE_SIZE
            folder = settings.persistence_path / tenant / PLUGIN_ID
            assert sum(path.stat().st_size for path in folder.iterdir()) == outcomes.count("ok") * VALUE_SIZE

    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT tenant_id, size FROM tenant_storages")).all()
    engine.dispose()
    assert sorted(rows) == [(tenant, (QUOTA // VALUE_SIZE) * VALUE_SIZE) for tenant in tenants]
