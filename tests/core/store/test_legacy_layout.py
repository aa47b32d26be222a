"""A database of this daemon's first layout (schema 2: Go's table names, other column types, storage
values in a table) is converted to the Go daemon's schema at start, losing nothing."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from plugin_daemon.backwards.storage import place_value
from plugin_daemon.store.database import SCHEMA_VERSION, Database, ensure_database
from plugin_daemon.store.models import InstallationRow, PluginDeclarationRow, TenantStorageRow, VerificationRow
from sqlalchemy import create_engine, inspect, select, text

TENANT = "0191f1a2-0000-7000-8000-00000000b001"
IDENTIFIER = "author/echo:0.0.1@" + "c" * 64
LEGACY_DDL = [
    "CREATE TABLE plugin_daemon_schema (id INTEGER PRIMARY KEY, version INTEGER)",
    "INSERT INTO plugin_daemon_schema VALUES (1, 2)",
    "CREATE TABLE plugin_declarations (id VARCHAR(36) PRIMARY KEY, created_at DATETIME, updated_at DATETIME,"
    " plugin_unique_identifier VARCHAR(255) UNIQUE, plugin_id VARCHAR(255), checksum VARCHAR(64),"
    " declaration JSON, verification JSON)",
    "CREATE TABLE plugin_installations (id VARCHAR(36) PRIMARY KEY, created_at DATETIME, updated_at DATETIME,"
    " tenant_id VARCHAR(64), plugin_id VARCHAR(255), plugin_unique_identifier VARCHAR(255),"
    " runtime_type VARCHAR(32), endpoints_setups INTEGER, endpoints_active INTEGER, source VARCHAR(32), meta JSON)",
    "CREATE TABLE tenant_storages (tenant_id VARCHAR(64), plugin_id VARCHAR(255), size INTEGER,"
    " PRIMARY KEY (tenant_id, plugin_id))",
    "CREATE TABLE plugin_storage_items (tenant_id VARCHAR(64), plugin_id VARCHAR(255), key VARCHAR(256),"
    " value BLOB, updated_at DATETIME, PRIMARY KEY (tenant_id, plugin_id, key))",
    "CREATE TABLE plugin_daemon_kv (namespace VARCHAR(64), key VARCHAR(255), value TEXT, expires_at DATETIME,"
    " PRIMARY KEY (namespace, key))",
]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_the_first_layout_is_converted(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """That layout ran on SQLite and PostgreSQL only."""
    url = f"sqlite:///{tmp_path / 'legacy.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    if backend == "postgresql":
        ensure_database(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        for statement in LEGACY_DDL:
            if backend == "postgresql":
                statement = statement.replace("DATETIME", "TIMESTAMP WITH TIME ZONE").replace("BLOB", "BYTEA")
            connection.execute(text(statement))
        connection.execute(
            text("INSERT INTO plugin_declarations VALUES (:id, :t, :t, :u, 'author/echo', 'c', :d, :v)"),
            {
                "id": "0191f1a2-0000-4000-8000-000000000001",
                "t": "2025-01-02 03:04:05.000000",
                "u": IDENTIFIER,
                "d": json.dumps({"name": "echo", "tool": {"identity": {"name": "echo"}}}),
                "v": json.dumps({"authorized_category": "langgenius"}),
            },
        )
        connection.execute(
            text(
                "INSERT INTO plugin_installations VALUES"
                " (:id, :t, :t, :tenant, 'author/echo', :u, 'local', 0, 0, '', :m)"
            ),
            {
                "id": "0191f1a2-0000-4000-8000-000000000002",
                "t": "2025-01-02 03:04:05.000000",
                "tenant": TENANT,
                "u": IDENTIFIER,
                "m": json.dumps({"k": 1}),
            },
        )
        connection.execute(text("INSERT INTO tenant_storages VALUES (:tenant, 'author/echo', 4)"), {"tenant": TENANT})
        connection.execute(
            text("INSERT INTO plugin_storage_items VALUES (:tenant, 'author/echo', 'dir/key', :v, NULL)"),
            {"tenant": TENANT, "v": b"kept"},
        )
        connection.execute(text("INSERT INTO plugin_daemon_kv VALUES ('debug', 'k', 'v', NULL)"))
    engine.dispose()

    root = tmp_path / "persistence"
    database = Database(url, storage_writer=functools.partial(place_value, root))
    try:
        with database.transaction() as session:
            declaration = session.scalars(select(PluginDeclarationRow)).one()
            assert declaration.declaration["tool"]["identity"]["name"] == "echo"
            assert declaration.created_at.year == 2025
            assert session.get(VerificationRow, IDENTIFIER).verification == {"authorized_category": "langgenius"}
            installation = session.scalars(select(InstallationRow)).one()
            assert (installation.tenant_id, installation.meta) == (TENANT, {"k": 1})
            usage = session.scalars(select(TenantStorageRow)).one()
            assert (usage.tenant_id, usage.size) == (TENANT, 4) and usage.id
        assert (root / TENANT / "author" / "echo" / "dir" / "key").read_bytes() == b"kept"
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT version FROM plugin_daemon_schema")).scalar() == SCHEMA_VERSION
            assert connection.execute(text("SELECT value FROM plugin_daemon_kv")).scalar() == "v"
        assert "plugin_storage_items" not in inspect(database.engine).get_table_names()
    finally:
        database.dispose()
