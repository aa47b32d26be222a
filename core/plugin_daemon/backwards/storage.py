"""Plugin storage, served by the daemon itself: a key-value store per (tenant, plugin).

Laid out as the Go daemon lays it out: each value is a file at
``PERSISTENCE_STORAGE_PATH/<tenant_id>/<plugin_id>/<key>``, and the bytes a plugin uses in a tenant
are counted in the ``tenant_storages`` table. The quota is checked *before* anything is written: a
set that would pass it changes nothing.

Writes of one (tenant, plugin) are serialized by a lock row of this daemon's own
(``plugin_daemon_storage_locks``), taken in the same transaction that reads and changes the usage
row, on SQLite, PostgreSQL and MySQL alike: parallel writers never collide on a first insert, never
pass the quota together, and the count always equals the bytes on disk.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from plugin_daemon.store.database import Database
from plugin_daemon.store.models import StorageLockRow, TenantStorageRow

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 256
NOT_FOUND = "load data failed, please check if the key is correct or you have not set it"
#: a tenant id, or one part of a plugin id: never a path of its own
_SAFE_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


class StorageError(Exception):
    pass


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise StorageError("storage key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise StorageError(f"storage key is {len(key)} characters long, the limit is {MAX_KEY_LENGTH}")
    if ".." in key or "//" in key or "\\" in key or "\x00" in key:
        raise StorageError("storage key must not contain '..', '//', '\\' or NUL")
    if posixpath.normpath("/" + key).lstrip("/") in ("", "."):
        raise StorageError("storage key must name a value, not a folder")
    return key


def value_path(root: Path, tenant_id: str, plugin_id: str, key: str) -> Path:
    """Where the Go daemon keeps a value: ``<root>/<tenant_id>/<plugin_id>/<key>``."""
    check_key(key)
    parts = [tenant_id, *plugin_id.split("/")]
    if not all(_SAFE_PART.match(part) for part in parts):
        raise StorageError("storage is not available to this plugin: its tenant or plugin id is not a plain name")
    # as Go's path.Join: the key is cleaned and a leading '/' means nothing
    return root.joinpath(*parts, posixpath.normpath("/" + key).lstrip("/"))


def _staged(target: Path, value: bytes) -> Path:
    """The value in a temporary file beside ``target``, ready to be renamed into place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StorageError("storage key names a folder under another key's value") from None
    fd, staged = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    return Path(staged)


def place_value(root: Path, tenant_id: str, plugin_id: str, key: str, value: bytes) -> None:
    """Put a value's file in place, counting nothing (converting an older layout, whose counts are kept)."""
    target = value_path(root, tenant_id, plugin_id, key)
    os.replace(_staged(target, value), target)


class PluginStorage:
    def __init__(self, database: Database, root: Path, max_size: int) -> None:
        self.db = database
        self.root = root
        self.max_size = max_size
        #: (tenant, plugin) pairs whose lock row is known to exist (lock rows are never deleted)
        self._lock_rows: set[tuple[str, str]] = set()

    def quota(self, declaration: dict[str, Any]) -> int:
        permission = ((declaration.get("resource") or {}).get("permission") or {}).get("storage") or {}
        declared = int(permission.get("size") or 0)
        return min(declared, self.max_size) if declared else self.max_size

    def _path(self, tenant_id: str, plugin_id: str, key: str) -> Path:
        return value_path(self.root, tenant_id, plugin_id, key)

    # --- the usage row, under the lock -------------------------------------------------------
    def _insert_ignoring_duplicates(self, tenant_id: str, plugin_id: str) -> Insert:
        values = {"tenant_id": tenant_id, "plugin_id": plugin_id, "writes": 0}
        dialect = self.db.dialect
        if dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(StorageLockRow).values(values).on_conflict_do_nothing()
        if dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            return mysql.insert(StorageLockRow).values(values).prefix_with("IGNORE")
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(StorageLockRow).values(values).on_conflict_do_nothing()

    def _lock(self, session: Session, tenant_id: str, plugin_id: str) -> None:
        """Hold the (tenant, plugin) lock until the transaction ends: an update of its lock row,
        which :meth:`_make_lock_row` made beforehand in a transaction of its own."""
        session.execute(
            update(StorageLockRow)
            .where(StorageLockRow.tenant_id == tenant_id, StorageLockRow.plugin_id == plugin_id)
            .values(writes=StorageLockRow.writes + 1)
        )

    def _make_lock_row(self, tenant_id: str, plugin_id: str) -> None:
        if (tenant_id, plugin_id) in self._lock_rows:
            return
        with self.db.transaction() as session:
            session.execute(self._insert_ignoring_duplicates(tenant_id, plugin_id))
        self._lock_rows.add((tenant_id, plugin_id))

    @staticmethod
    def _usage_row(session: Session, tenant_id: str, plugin_id: str) -> TenantStorageRow:
        """The usage row; rows the Go daemon doubled (its first writes could race) are merged into one."""
        rows = list(
            session.scalars(
                select(TenantStorageRow)
                .where(TenantStorageRow.tenant_id == tenant_id, TenantStorageRow.plugin_id == plugin_id)
                .order_by(TenantStorageRow.created_at, TenantStorageRow.id)
            )
        )
        if not rows:
            row = TenantStorageRow(tenant_id=tenant_id, plugin_id=plugin_id, size=0)
            session.add(row)
            return row
        first, *others = rows
        for other in others:
            first.size += other.size
            session.delete(other)
        return first

    # --- operations ---------------------------------------------------------------------
    def get(self, tenant_id: str, plugin_id: str, key: str) -> bytes:
        try:
            return self._path(tenant_id, plugin_id, key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise StorageError(NOT_FOUND) from None

    def set(self, tenant_id: str, plugin_id: str, key: str, value: bytes, quota: int) -> None:
        target = self._path(tenant_id, plugin_id, key)
        if len(value) > quota:
            raise StorageError(self._over(key, value, len(value), quota))
        staged = _staged(target, value)
        try:
            self._make_lock_row(tenant_id, plugin_id)
            with self.db.transaction() as session:
                self._lock(session, tenant_id, plugin_id)
                usage = self._usage_row(session, tenant_id, plugin_id)
                old = target.stat().st_size if target.is_file() else 0
                new_size = usage.size - old + len(value)
                if new_size > quota:
                    raise StorageError(self._over(key, value, new_size, quota))
                if target.is_dir():
                    raise StorageError("storage key names a folder of other keys")
                os.replace(staged, target)
                usage.size = new_size
        finally:
            staged.unlink(missing_ok=True)

    @staticmethod
    def _over(key: str, value: bytes, new_size: int, quota: int) -> str:
        return (
            f"allocated size is greater than max storage size: storing {len(value)} bytes under "
            f"{key!r} would bring this plugin's storage to {new_size} bytes, over its quota of {quota}"
        )

    def delete(self, tenant_id: str, plugin_id: str, key: str) -> int:
        target = self._path(tenant_id, plugin_id, key)
        if not target.is_file():
            return 0
        self._make_lock_row(tenant_id, plugin_id)
        with self.db.transaction() as session:
            self._lock(session, tenant_id, plugin_id)
            try:
                size = target.stat().st_size
                target.unlink()
            except FileNotFoundError:
                return 0
            usage = self._usage_row(session, tenant_id, plugin_id)
            usage.size = max(0, usage.size - size)
            return 1

    def exists(self, tenant_id: str, plugin_id: str, key: str) -> bool:
        return self._path(tenant_id, plugin_id, key).is_file()

    def usage(self, tenant_id: str, plugin_id: str) -> int:
        with self.db.transaction() as session:
            rows = session.scalars(
                select(TenantStorageRow.size).where(
                    TenantStorageRow.tenant_id == tenant_id, TenantStorageRow.plugin_id == plugin_id
                )
            )
            return sum(rows)

    def handle(self, tenant_id: str, plugin_id: str, declaration: dict[str, Any], request: dict[str, Any]) -> Any:
        """One storage request of the SDK (``opt`` get/set/del/exist); returns the reply's data."""
        try:
            return self._handle(tenant_id, plugin_id, declaration, request)
        except SQLAlchemyError as exc:
            log.warning("plugin storage of %s in tenant %s: database error: %s", plugin_id, tenant_id, exc)
            raise StorageError("storage is unavailable: the database refused the operation; try again") from None
        except OSError as exc:
            log.warning("plugin storage of %s in tenant %s: %s", plugin_id, tenant_id, exc)
            raise StorageError(f"storage is unavailable: {exc.strerror or 'file system error'}") from None

    def _handle(self, tenant_id: str, plugin_id: str, declaration: dict[str, Any], request: dict[str, Any]) -> Any:
        operation = request.get("opt")
        key = check_key(request.get("key"))
        if operation == "get":
            return {"data": self.get(tenant_id, plugin_id, key).hex()}
        if operation == "set":
            raw = request.get("value")
            try:
                value = bytes.fromhex(raw) if isinstance(raw, str) else None
            except ValueError:
                value = None
            if value is None:
                raise StorageError("storage value must be a hex string")
            self.set(tenant_id, plugin_id, key, value, self.quota(declaration))
            return {"data": "ok"}
        if operation == "del":
            return {"data": "ok", "deleted_num": self.delete(tenant_id, plugin_id, key)}
        if operation == "exist":
            found = self.exists(tenant_id, plugin_id, key)
            return {"data": found, "exist_num": int(found)}
        raise StorageError(f"unknown storage operation {operation!r}; expected get, set, del or exist")
