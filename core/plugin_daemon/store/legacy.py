"""Conversion of this daemon's first database layout (schema versions 1 and 2) to the Go daemon's.

That layout used the Go daemon's table names with other column types, and kept plugin storage
values in a table. The conversion reads every row, drops the old tables, creates Go's and copies
the rows across (one transaction where the database allows DDL in one: SQLite and PostgreSQL, the
only databases that layout ran on); stored values become files, as the Go daemon keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plugin_daemon.store.models import GO_TABLE_DEFINITIONS, Base, VerificationRow
from plugin_daemon.store.types import GoUUID, is_uuid
from sqlalchemy import Connection, MetaData, Table, inspect, select

LEGACY_VERSIONS = frozenset({1, 2})
_STORAGE_ITEMS = "plugin_storage_items"


class LegacyConversionError(RuntimeError):
    pass


def _rows(connection: Connection, name: str) -> list[dict[str, Any]]:
    table = Table(name, MetaData(), autoload_with=connection)
    return [dict(row._mapping) for row in connection.execute(select(table))]


def convert_legacy_layout(
    connection: Connection, storage_writer: Callable[[str, str, str, bytes], None] | None
) -> None:
    present = set(inspect(connection).get_table_names())
    go_tables = GO_TABLE_DEFINITIONS
    old = {name: _rows(connection, name) for name in [*go_tables, _STORAGE_ITEMS] if name in present}
    if old.get(_STORAGE_ITEMS) and storage_writer is None:
        raise LegacyConversionError("the database holds plugin storage values and no storage folder was given")
    postgres = connection.dialect.name == "postgresql"
    for name, rows in old.items():
        table = go_tables.get(name)
        if table is None or not postgres:
            continue
        for column in table.columns:
            if isinstance(column.type, GoUUID):
                bad = next(
                    (row[column.name] for row in rows if row.get(column.name) and not is_uuid(row[column.name])), None
                )
                if bad is not None:
                    raise LegacyConversionError(
                        f"{name}.{column.name} holds {bad!r}, which is not a UUID; the Go daemon's schema "
                        "stores it as uuid"
                    )
    for name in old:
        Table(name, MetaData(), autoload_with=connection).drop(connection)
    Base.metadata.create_all(connection, checkfirst=True)
    for name, rows in old.items():
        table = go_tables.get(name)
        if table is None or not rows:
            continue
        wanted = set(table.columns.keys())
        connection.execute(table.insert(), [{k: v for k, v in row.items() if k in wanted} for row in rows])
        if name == "plugin_declarations":
            verifications = [
                {"plugin_unique_identifier": row["plugin_unique_identifier"], "verification": row.get("verification")}
                for row in rows
                if row.get("verification") is not None
            ]
            if verifications:
                connection.execute(VerificationRow.__table__.insert(), verifications)  # type: ignore[attr-defined]
    for row in old.get(_STORAGE_ITEMS, []):
        assert storage_writer is not None
        storage_writer(row["tenant_id"], row["plugin_id"], row["key"], bytes(row["value"]))
