"""Where each installed plugin's function lives, persisted so that a restart never redeploys.

Kept in the daemon's key-value table (namespace ``serverless_functions``, key = the plugin's
unique identifier, which holds the package checksum).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import KeyValueRow
from sqlalchemy import delete, select

NAMESPACE = "serverless_functions"


@dataclass(frozen=True)
class FunctionRecord:
    identifier: str
    checksum: str
    function_url: str
    function_name: str
    function_id: str = ""


class FunctionStore:
    """Synchronous (SQLAlchemy); call it from a worker thread."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def get(self, identifier: str) -> FunctionRecord | None:
        with self.database.transaction() as session:
            row = session.scalar(
                select(KeyValueRow).where(KeyValueRow.namespace == NAMESPACE, KeyValueRow.key == identifier)
            )
            if row is None:
                return None
            try:
                return FunctionRecord(**orjson.loads(row.value))
            except (orjson.JSONDecodeError, TypeError):
                return None

    def put(self, record: FunctionRecord) -> None:
        value = orjson.dumps(asdict(record)).decode()
        with self.database.transaction() as session:
            row = session.get(KeyValueRow, (NAMESPACE, record.identifier))
            if row is None:
                session.add(KeyValueRow(namespace=NAMESPACE, key=record.identifier, value=value))
            else:
                row.value = value

    def forget(self, identifier: str) -> None:
        with self.database.transaction() as session:
            session.execute(
                delete(KeyValueRow).where(KeyValueRow.namespace == NAMESPACE, KeyValueRow.key == identifier)
            )
