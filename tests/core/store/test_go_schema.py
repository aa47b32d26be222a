"""The database schema is the Go daemon's: built from its models by hand (go_schema_postgres.sql),
compared with what this daemon creates, adopted when found, and refused when it is something else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from plugin_daemon.store.database import SCHEMA_VERSION, Database, SchemaError, ensure_database
from plugin_daemon.store.models import GO_TABLE_DEFINITIONS, OWN_PREFIX
from sqlalchemy import create_engine, inspect, text

FIXTURE = Path(__file__).with_name("go_schema_postgres.sql")
GO_TABLE_NAMES = sorted(GO_TABLE_DEFINITIONS)


def load_go_schema(url: str) -> None:
    """Make the database as the Go daemon's AutoMigrate leaves it."""
    admin = create_engine(url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"'))
    admin.dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(FIXTURE.read_text())
    engine.dispose()


def snapshot(url: str) -> dict[str, Any]:
    """Columns, indexes and constraints of the Go tables, as PostgreSQL describes them."""
    engine = create_engine(url)
    with engine.connect() as connection:
        columns = connection.execute(
            text(
                "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = ANY(:t) "
                "ORDER BY table_name, column_name"
            ),
            {"t": GO_TABLE_NAMES},
        ).all()
        indexes = connection.execute(
            text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY(:t) ORDER BY indexname"),
            {"t": GO_TABLE_NAMES},
        ).all()
        constraints = connection.execute(
            text(
                "SELECT conrelid::regclass::text, conname, contype FROM pg_constraint "
                "WHERE conrelid::regclass::text = ANY(:t) ORDER BY conname"
            ),
            {"t": GO_TABLE_NAMES},
        ).all()
        tables = sorted(inspect(connection).get_table_names())
    engine.dispose()
    return {"columns": columns, "indexes": indexes, "constraints": constraints, "tables": tables}


@pytest.mark.postgres
def test_the_schema_created_is_the_go_daemons(postgres_url: str) -> None:
    go_url = postgres_url + "_go"
    load_go_schema(go_url)
    try:
        ours = Database(postgres_url)
        ours.dispose()
        mine, go = snapshot(postgres_url), snapshot(go_url)
        assert mine["columns"] == go["columns"]
        assert mine["indexes"] == go["indexes"]
        assert mine["constraints"] == go["constraints"]
        assert [name for name in mine["tables"] if not name.startswith(OWN_PREFIX)] == go["tables"]
    finally:
        admin = create_engine(postgres_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{go_url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def go_database(postgres_url: str) -> str:
    load_go_schema(postgres_url)
    return postgres_url


@pytest.mark.postgres
def test_a_go_database_is_adopted_without_touching_its_tables(go_database: str) -> None:
    before = snapshot(go_database)
    for _ in range(2):  # and a restart changes nothing
        database = Database(go_database)
        database.dispose()
    after = snapshot(go_database)
    assert after["columns"] == before["columns"]
    assert after["indexes"] == before["indexes"]
    assert after["constraints"] == before["constraints"]
    added = set(after["tables"]) - set(before["tables"])
    assert added and all(name.startswith(OWN_PREFIX) for name in added)
    engine = create_engine(go_database)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version FROM plugin_daemon_schema")).scalar() == SCHEMA_VERSION
    engine.dispose()


@pytest.mark.postgres
def test_an_older_go_database_gets_the_tables_it_lacked(go_database: str) -> None:
    engine = create_engine(go_database)
    with engine.begin() as connection:  # a Go daemon from before triggers and readme records
        connection.execute(text("DROP TABLE trigger_installations, plugin_readme_records"))
    engine.dispose()
    Database(go_database).dispose()
    assert {"trigger_installations", "plugin_readme_records"} <= set(snapshot(go_database)["tables"])


@pytest.mark.postgres
def test_a_changed_go_table_stops_the_start(go_database: str) -> None:
    engine = create_engine(go_database)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE plugin_installations DROP COLUMN meta"))
        connection.execute(text("ALTER TABLE endpoints ALTER COLUMN enabled TYPE varchar(5)"))
        connection.execute(text("ALTER TABLE plugins ADD COLUMN owner varchar(64) NOT NULL"))
    engine.dispose()
    with pytest.raises(SchemaError) as failure:
        Database(go_database)
    message = str(failure.value)
    assert "changed in a way plugin-daemon does not understand" in message
    assert "plugin_installations.meta is missing" in message
    assert "endpoints.enabled is VARCHAR(5)" in message
    assert "plugins.owner is an unknown column that may not be null" in message
    assert "SELECT" not in message


def test_another_applications_database_stops_the_start(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        ensure_database(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE accounts (id integer primary key, name varchar(10))"))
    engine.dispose()
    with pytest.raises(SchemaError, match=r"neither the Go plugin daemon's nor plugin-daemon's \(accounts\)"):
        Database(database_url)


def test_a_newer_schema_stops_the_start(database_url: str) -> None:
    Database(database_url).dispose()
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE plugin_daemon_schema SET version = 99"))
    engine.dispose()
    with pytest.raises(SchemaError, match="schema version 99, newer than this daemon's"):
        Database(database_url)


def test_an_unreachable_database_is_said_plainly() -> None:
    with pytest.raises(SchemaError, match="cannot open the database") as failure:
        Database("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(failure.value)


def test_every_database_has_the_same_tables_and_columns(database_url: str) -> None:
    Database(database_url).dispose()
    engine = create_engine(database_url)
    inspector = inspect(engine)
    for table in GO_TABLE_DEFINITIONS.values():
        found = {column["name"]: column for column in inspector.get_columns(table.name)}
        assert list(found) == [column.name for column in table.columns]
        for column in table.columns:
            assert found[column.name]["nullable"] == (column.nullable and not column.primary_key), column
        names = {index["name"] for index in inspector.get_indexes(table.name)}
        names |= {unique["name"] for unique in inspector.get_unique_constraints(table.name)}
        assert {index.name for index in table.indexes} <= names
    if engine.dialect.name == "mysql":  # as the Go daemon's MySQL dialect: uuid -> char(36), text -> longtext
        with engine.connect() as connection:
            types = dict(
                connection.execute(
                    text(
                        "SELECT column_name, column_type FROM information_schema.columns "
                        "WHERE table_schema = DATABASE() AND table_name = 'plugin_installations'"
                    )
                ).all()
            )
        assert (types["id"], types["tenant_id"], types["meta"]) == ("char(36)", "char(36)", "longtext")
        assert (types["created_at"], types["endpoints_setups"]) == ("datetime(3)", "bigint(20)")
    engine.dispose()
