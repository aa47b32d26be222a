"""Where each installed plugin's function lives, persisted so that a restart never redeploys.

Kept as the Go daemon keeps it: one ``serverless_runtimes`` row per plugin unique identifier
(checksum, type ``serverless``, function URL and name), so either daemon finds the other's
functions. Records an earlier version of this daemon kept in its key-value table (namespace
``serverless_functions``) are moved there when first read.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import KeyValueRow, ServerlessRuntimeRow
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

LEGACY_NAMESPACE = "serverless_functions"
#: models.SERVERLESS_RUNTIME_TYPE_SERVERLESS
RUNTIME_TYPE = "serverless"


@dataclass(frozen=True)
class FunctionRecord:
    identifier: str
    checksum: str
    function_url: str
    function_name: str
    #: the connector's id of the function (logged at deployment; the Go schema has no column for it)
    function_id: str = ""


class FunctionStore:
    """Synchronous (SQLAlchemy); call it from a worker thread."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def get(self, identifier: str) -> FunctionRecord | None:
        with self.database.transaction() as session:
            row = self._row(session, identifier)
            if row is not None:
                return FunctionRecord(identifier, row.checksum or "", row.function_url or "", row.function_name or "")
            legacy = session.get(KeyValueRow, (LEGACY_NAMESPACE, identifier))
            if legacy is None:
                return None
            session.delete(legacy)
            try:
                record = FunctionRecord(**orjson.loads(legacy.value))
            except (orjson.JSONDecodeError, TypeError):
                return None
            self._write(session, record)
            return FunctionRecord(record.identifier, record.checksum, record.function_url, record.function_name)

    def put(self, record: FunctionRecord) -> None:
        with self.database.transaction() as session:
            self._write(session, record)

    def forget(self, identifier: str) -> None:
        with self.database.transaction() as session:
            session.execute(
                delete(ServerlessRuntimeRow).where(ServerlessRuntimeRow.plugin_unique_identifier == identifier)
            )
            session.execute(
                delete(KeyValueRow).where(KeyValueRow.namespace == LEGACY_NAMESPACE, KeyValueRow.key == identifier)
            )

    @staticmethod
    def _row(session: Session, identifier: str) -> ServerlessRuntimeRow | None:
        return session.scalar(
            select(ServerlessRuntimeRow).where(ServerlessRuntimeRow.plugin_unique_identifier == identifier)
        )

    def _write(self, session: Session, record: FunctionRecord) -> None:
        row = self._row(session, record.identifier)
        if row is None:
            row = ServerlessRuntimeRow(plugin_unique_identifier=record.identifier)
            session.add(row)
        row.checksum = record.checksum
        row.type = RUNTIME_TYPE
        row.function_url = record.function_url
        row.function_name = record.function_name
