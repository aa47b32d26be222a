"""Plugin storage, served by the daemon itself: a key-value store per (tenant, plugin).

Values live in the database (SQLite or PostgreSQL) and so survive restarts. The quota is
checked *before* anything is written: a set that would pass it changes nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from plugin_daemon.store.database import Database
from plugin_daemon.store.models import StorageItemRow, TenantStorageRow

MAX_KEY_LENGTH = 256
NOT_FOUND = "load data failed, please check if the key is correct or you have not set it"


class StorageError(Exception):
    pass


def check_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise StorageError("storage key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise StorageError(f"storage key is {len(key)} characters long, the limit is {MAX_KEY_LENGTH}")
    if ".." in key or "//" in key or "\\" in key or "\x00" in key:
        raise StorageError("storage key must not contain '..', '//', '\\' or NUL")
    return key


class PluginStorage:
    def __init__(self, database: Database, max_size: int) -> None:
        self.db = database
        self.max_size = max_size

    def quota(self, declaration: dict[str, Any]) -> int:
        permission = ((declaration.get("resource") or {}).get("permission") or {}).get("storage") or {}
        declared = int(permission.get("size") or 0)
        return min(declared, self.max_size) if declared else self.max_size

    def get(self, tenant_id: str, plugin_id: str, key: str) -> bytes:
        check_key(key)
        with self.db.transaction() as session:
            row = session.get(StorageItemRow, (tenant_id, plugin_id, key))
            if row is None:
                raise StorageError(NOT_FOUND)
            return row.value

    def set(self, tenant_id: str, plugin_id: str, key: str, value: bytes, quota: int) -> None:
        check_key(key)
        with self.db.transaction() as session:
            usage = session.get(TenantStorageRow, (tenant_id, plugin_id), with_for_update=True)
            if usage is None:
                usage = TenantStorageRow(tenant_id=tenant_id, plugin_id=plugin_id, size=0)
                session.add(usage)
            row = session.get(StorageItemRow, (tenant_id, plugin_id, key))
            new_size = usage.size - (len(row.value) if row else 0) + len(value)
            if new_size > quota:
                raise StorageError(
                    f"allocated size is greater than max storage size: storing {len(value)} bytes under "
                    f"{key!r} would bring this plugin's storage to {new_size} bytes, over its quota of {quota}"
                )
            if row is None:
                session.add(StorageItemRow(tenant_id=tenant_id, plugin_id=plugin_id, key=key, value=value))
            else:
                row.value = value
            usage.size = new_size

    def delete(self, tenant_id: str, plugin_id: str, key: str) -> int:
        check_key(key)
        with self.db.transaction() as session:
            row = session.get(StorageItemRow, (tenant_id, plugin_id, key))
            if row is None:
                return 0
            usage = session.get(TenantStorageRow, (tenant_id, plugin_id), with_for_update=True)
            if usage is not None:
                usage.size = max(0, usage.size - len(row.value))
            session.delete(row)
            return 1

    def exists(self, tenant_id: str, plugin_id: str, key: str) -> bool:
        check_key(key)
        with self.db.transaction() as session:
            found = session.scalar(
                select(StorageItemRow.key).where(
                    StorageItemRow.tenant_id == tenant_id,
                    StorageItemRow.plugin_id == plugin_id,
                    StorageItemRow.key == key,
                )
            )
            return found is not None

    def usage(self, tenant_id: str, plugin_id: str) -> int:
        with self.db.transaction() as session:
            row = session.get(TenantStorageRow, (tenant_id, plugin_id))
            return row.size if row else 0

    def handle(self, tenant_id: str, plugin_id: str, declaration: dict[str, Any], request: dict[str, Any]) -> Any:
        """One storage request of the SDK (``opt`` get/set/del/exist); returns the reply's data."""
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
