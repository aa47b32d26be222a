"""Functions are recorded as the Go daemon records them (serverless_runtimes), read either way."""

from __future__ import annotations

from pathlib import Path

import orjson
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import KeyValueRow, ServerlessRuntimeRow
from plugin_daemon_serverless.functions import FunctionRecord, FunctionStore
from sqlalchemy import select

IDENTIFIER = "tester/echo:0.0.1@" + "a" * 64


def test_functions_the_go_daemon_recorded_are_found_and_ours_are_rows_it_reads(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        with database.transaction() as session:  # as Go's persistServerlessRuntime writes it
            session.add(
                ServerlessRuntimeRow(
                    plugin_unique_identifier=IDENTIFIER,
                    checksum="a" * 64,
                    type="serverless",
                    function_url="http://functions/echo",
                    function_name="echo-fn",
                )
            )
        store = FunctionStore(database)
        assert store.get(IDENTIFIER) == FunctionRecord(IDENTIFIER, "a" * 64, "http://functions/echo", "echo-fn")
        other = "tester/other:0.0.1@" + "b" * 64
        store.put(FunctionRecord(other, "b" * 64, "http://functions/other", "other-fn", "id-1"))
        with database.transaction() as session:
            row = session.scalars(
                select(ServerlessRuntimeRow).where(ServerlessRuntimeRow.plugin_unique_identifier == other)
            ).one()
            assert (row.type, row.checksum, row.function_url, row.function_name) == (
                "serverless",
                "b" * 64,
                "http://functions/other",
                "other-fn",
            )
        store.forget(other)
        assert store.get(other) is None
    finally:
        database.dispose()


def test_records_of_the_key_value_table_move_to_serverless_runtimes(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        record = {"identifier": IDENTIFIER, "checksum": "a" * 64, "function_url": "u", "function_name": "n"}
        with database.transaction() as session:
            session.add(
                KeyValueRow(namespace="serverless_functions", key=IDENTIFIER, value=orjson.dumps(record).decode())
            )
        assert FunctionStore(database).get(IDENTIFIER) == FunctionRecord(IDENTIFIER, "a" * 64, "u", "n")
        with database.transaction() as session:
            assert session.scalars(select(KeyValueRow)).all() == []
            assert session.scalars(select(ServerlessRuntimeRow.function_url)).all() == ["u"]
    finally:
        database.dispose()
