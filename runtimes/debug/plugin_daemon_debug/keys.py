"""Debugging keys: one per tenant, living ``PLUGIN_REMOTE_INSTALLING_KEY_TTL`` seconds after last use.

Kept in the ``plugin_daemon_kv`` table (two rows per key: tenant → key and key → tenant), so a
daemon restart keeps them. Synchronous (SQLAlchemy): call from a worker thread.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from plugin_daemon.store.database import Database
from plugin_daemon.store.models import KeyValueRow
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

#: tenant id → key
BY_TENANT = "debugging_key_by_tenant"
#: key → tenant id
BY_KEY = "debugging_key"


def _now() -> datetime:
    return datetime.now(UTC)


def _expired(row: KeyValueRow, now: datetime) -> bool:
    expires = row.expires_at
    if expires is None:
        return False
    if expires.tzinfo is None:  # SQLite gives naive datetimes back
        expires = expires.replace(tzinfo=UTC)
    return expires <= now


class DebuggingKeys:
    """Issues and checks debugging keys."""

    def __init__(self, database: Database, ttl: float) -> None:
        self.db = database
        self.ttl = timedelta(seconds=ttl)
        self._lock = threading.Lock()

    def issue(self, tenant_id: str) -> str:
        """The tenant's key: the live one (its life extended), or a new one."""
        for _ in range(3):  # another node may insert the same tenant's key at the same moment
            try:
                return self._issue(tenant_id)
            except IntegrityError:
                continue
        return self._issue(tenant_id)

    def _issue(self, tenant_id: str) -> str:
        now = _now()
        expires = now + self.ttl
        with self._lock, self.db.transaction() as session:
            current = session.get(KeyValueRow, (BY_TENANT, tenant_id))
            if current is not None and not _expired(current, now):
                reverse = session.get(KeyValueRow, (BY_KEY, current.value))
                if reverse is not None and reverse.value == tenant_id:
                    current.expires_at = reverse.expires_at = expires
                    return current.value
            if current is not None:
                session.execute(
                    delete(KeyValueRow).where(KeyValueRow.namespace == BY_KEY, KeyValueRow.key == current.value)
                )
                session.delete(current)
                session.flush()
            key = str(uuid.uuid4())
            session.add(KeyValueRow(namespace=BY_TENANT, key=tenant_id, value=key, expires_at=expires))
            session.add(KeyValueRow(namespace=BY_KEY, key=key, value=tenant_id, expires_at=expires))
            return key

    def tenant_of(self, key: str) -> str | None:
        """The tenant a live key belongs to (its life extended), or None."""
        if not key or len(key) > 255:
            return None
        now = _now()
        with self._lock, self.db.transaction() as session:
            row = session.get(KeyValueRow, (BY_KEY, key))
            if row is None:
                return None
            if _expired(row, now):
                session.delete(row)
                return None
            expires = now + self.ttl
            row.expires_at = expires
            current = session.get(KeyValueRow, (BY_TENANT, row.value))
            if current is not None and current.value == key:
                current.expires_at = expires
            return row.value

    def purge_expired(self) -> int:
        """Delete expired keys; returns how many rows went."""
        now = _now()
        with self._lock, self.db.transaction() as session:
            rows = session.scalars(
                select(KeyValueRow).where(
                    KeyValueRow.namespace.in_((BY_KEY, BY_TENANT)), KeyValueRow.expires_at.is_not(None)
                )
            )
            gone = [row for row in rows if _expired(row, now)]
            for row in gone:
                session.delete(row)
            return len(gone)
