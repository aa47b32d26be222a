"""A fault inside the daemon (its database gone away) while it answers a plugin's backwards call, or
before it calls the plugin: an error at once in Dify's envelope, without SQL; never silence until
PLUGIN_MAX_EXECUTION_TIMEOUT."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from tests.conformance.suite import Target, call_tool, items_of, plugin_error
from tests.conftest import POSTGRES_ADMIN_URL
from tests.runtimes.local.test_local_http import install, local_settings
from tests.support.daemon_server import running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TENANT = "6f1c2b1e-3c4d-4e5f-8a9b-0c1d2e3f4a5b"  # PostgreSQL keeps tenant ids as UUIDs
OTHER_TENANT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def set_connections_allowed(database: str, allowed: bool) -> None:
    """Make the database take connections or not; when not, end the ones it has (a database gone away)."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name"),
                {"name": database},
            )
    admin.dispose()


def test_storage_on_a_database_gone_away_answers_the_plugin_with_an_error(tmp_path: Path, postgres_url: str) -> None:
    database = make_url(postgres_url).database
    assert database
    with DifyInnerAPI(key="inner-key") as inner_api:
        settings = local_settings(
            tmp_path / "home", inner_api, DATABASE_URL=postgres_url, PLUGIN_MAX_EXECUTION_TIMEOUT=120
        )
        with running_daemon(settings) as server:
            install(server, "echo_tool", TENANT)
            target = Target(server.client, TENANT)
            assert items_of(call_tool(target, "storage", {"op": "set", "key": "k", "value": "v"}))
            set_connections_allowed(database, False)
            try:
                began = time.monotonic()
                events = call_tool(target, "storage", {"op": "set", "key": "k", "value": "w"})
                took = time.monotonic() - began
                # a call whose installation must be read from the database: Dify's envelope, no SQL
                unknown = call_tool(Target(server.client, OTHER_TENANT), "echo", {"text": "x"})
            finally:
                set_connections_allowed(database, True)
            assert took < 15, f"the plugin waited {took:.1f} s for its storage answer"
            error = plugin_error(events[-1])
            text_of_error = json.dumps(error)
            assert error["message"], error
            for leak in ("SELECT", "INSERT", "UPDATE", "Traceback", "postgres"):
                assert leak not in text_of_error, error
            assert len(unknown) == 1 and unknown[0]["code"] == -500 and unknown[0]["data"] is None, unknown
            assert json.loads(unknown[0]["message"])["message"].startswith("internal error (OperationalError)")
            # the database is back: storage works again
            assert items_of(call_tool(target, "storage", {"op": "set", "key": "k", "value": "x"}))
