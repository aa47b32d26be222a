"""What the Go daemon writes, and a check that every row of a database is one it can read.

``GoWriter`` puts rows and files in place the way the Go daemon's code writes them (for a tool
plugin installed in tenants, an endpoint, a stored key, an install task). ``row_problems`` reads
every row of the Go tables raw (without this daemon's column types) and checks it against Go's
models (langgenius/dify-plugin-daemon@bdb5642a, internal/types/models): value types, no NULL where
the model has a plain value, the JSON documents in the shapes Go's structs decode.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugin_daemon.packages import decode_package
from plugin_daemon.store.models import GO_TABLE_DEFINITIONS
from plugin_daemon.store.types import GoJSON, GoUUID, is_uuid, new_id
from sqlalchemy import BigInteger, Boolean, Connection, String, text

#: InstallTaskPluginStatus, field by field
TASK_PLUGIN_FIELDS = {
    "plugin_unique_identifier": str,
    "labels": dict,
    "icon": str,
    "icon_dark": str,
    "plugin_id": str,
    "status": str,
    "message": str,
    "source": str,
}


def go_json(value: Any) -> str:
    """encoding/json's compact form."""
    return json.dumps(value, separators=(",", ":"))


class GoWriter:
    """Rows and files as the Go daemon leaves them after installing a local plugin package."""

    def __init__(self, connection: Connection, root: Path) -> None:
        self.connection = connection
        self.root = root
        self.now = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
        if connection.dialect.name != "postgresql":  # MySQL's datetime(3) keeps no zone; Go writes UTC
            self.now = self.now.replace(tzinfo=None)

    def insert(self, table: str, **values: Any) -> str:
        values = {"id": new_id(), "created_at": self.now, "updated_at": self.now, **values}
        columns = ", ".join(values)
        self.connection.execute(
            text(f"INSERT INTO {table} ({columns}) VALUES ({', '.join(':' + name for name in values)})"), values
        )
        return str(values["id"])

    def package(self, package: bytes, tenants: list[str]) -> tuple[str, dict[str, Any]]:
        """Upload and install ``package`` for ``tenants``: files under the storage root, then rows."""
        decoded = decode_package(package)
        identifier, declaration = str(decoded.identifier), decoded.declaration
        for bucket in ("plugin_packages", "plugin"):  # PackageBucket, then InstalledBucket (InstallToLocal)
            target = self.root / bucket / identifier
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(package)
        for media_id, content in decoded.assets.items():  # MediaBucket
            (self.root / "assets").mkdir(parents=True, exist_ok=True)
            (self.root / "assets" / media_id).write_bytes(content)
        plugin_id = f"{declaration['author']}/{declaration['name']}"
        self.insert(
            "plugin_declarations",
            plugin_unique_identifier=identifier,
            plugin_id=plugin_id,
            declaration=go_json({**declaration, "verified": False}),
        )
        self.insert(
            "plugins",
            plugin_unique_identifier=identifier,
            plugin_id=plugin_id,
            refers=len(tenants),
            install_type="local",
            manifest_type="plugin",
            remote_declaration=go_json({"version": "", "author": "", "name": "", "verified": False}),
            source="",
        )
        for tenant in tenants:
            self.insert(
                "plugin_installations",
                tenant_id=tenant,
                plugin_id=plugin_id,
                plugin_unique_identifier=identifier,
                runtime_type="local",
                endpoints_setups=0,
                endpoints_active=0,
                source="package",
                meta=go_json({}),
            )
            self.insert(
                "tool_installations",
                tenant_id=tenant,
                provider=declaration["tool"]["identity"]["name"],
                plugin_unique_identifier=identifier,
                plugin_id=plugin_id,
            )
            self.insert(
                "install_tasks",
                status="success",
                tenant_id=tenant,
                total_plugins=1,
                completed_plugins=1,
                plugins=go_json(
                    [
                        {
                            "plugin_unique_identifier": identifier,
                            "labels": declaration["label"],
                            "icon": declaration["icon"],
                            "icon_dark": "",
                            "plugin_id": plugin_id,
                            "status": "success",
                            "message": "Installed",
                            "source": "package",
                        }
                    ]
                ),
            )
        return identifier, declaration

    def endpoint(self, tenant: str, plugin_id: str, settings: dict[str, Any]) -> tuple[str, str]:
        hook_id = uuid.uuid4().hex
        endpoint_id = self.insert(
            "endpoints",
            name="from go",
            hook_id=hook_id,
            tenant_id=tenant,
            user_id="user-go",
            plugin_id=plugin_id,
            expired_at=self.now.replace(year=2050),
            enabled=True,
            settings=go_json(settings),
        )
        self.connection.execute(
            text(
                "UPDATE plugin_installations SET endpoints_setups = endpoints_setups + 1, "
                "endpoints_active = endpoints_active + 1 WHERE tenant_id = :t AND plugin_id = :p"
            ),
            {"t": tenant, "p": plugin_id},
        )
        return endpoint_id, hook_id

    def stored_key(self, tenant: str, plugin_id: str, key: str, value: bytes) -> None:
        target = self.root / "persistence" / tenant / plugin_id / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(value)
        self.insert("tenant_storages", tenant_id=tenant, plugin_id=plugin_id, size=len(value))


def _declaration_problems(where: str, document: Any) -> list[str]:
    if not isinstance(document, dict):
        return [f"{where}: not an object"]
    problems = []
    for field, kind in (
        ("version", str),
        ("author", str),
        ("name", str),
        ("label", dict),
        ("icon", str),
        ("resource", dict),
        ("plugins", dict),
        ("meta", dict),
        ("created_at", str),
    ):
        if not isinstance(document.get(field), kind):
            problems.append(f"{where}.{field} is {document.get(field)!r}, Go decodes a {kind.__name__}")
    if isinstance(document.get("created_at"), str):
        try:
            datetime.fromisoformat(document["created_at"].replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"{where}.created_at is not an RFC 3339 time")
    if not isinstance((document.get("resource") or {}).get("memory"), int):
        problems.append(f"{where}.resource.memory is not an integer")
    if not all(isinstance(value, str) for value in (document.get("label") or {}).values()):
        problems.append(f"{where}.label holds a value that is not a string")
    tags = document.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(tag, str) for tag in tags)):
        problems.append(f"{where}.tags is not a list of strings")
    for key in ("tool", "model", "endpoint", "agent_strategy", "datasource", "trigger"):
        if document.get(key) is not None and not isinstance(document[key], dict):
            problems.append(f"{where}.{key} is not an object")
    return problems


def _json_problems(table: str, column: str, where: str, document: Any) -> list[str]:
    if table == "plugin_declarations" or (table == "plugins" and column == "remote_declaration"):
        if table == "plugins" and isinstance(document, dict) and not document.get("name"):
            return []  # the empty declaration Go writes for a plugin that is not remote
        return _declaration_problems(where, document)
    if table == "install_tasks":
        if not isinstance(document, list):
            return [f"{where}: not a list"]
        problems = []
        for number, item in enumerate(document):
            for field, kind in TASK_PLUGIN_FIELDS.items():
                if not isinstance(item.get(field) if isinstance(item, dict) else None, kind):
                    problems.append(f"{where}[{number}].{field} is not a {kind.__name__}")
            if isinstance(item, dict) and item.get("status") not in ("pending", "running", "success", "failed"):
                problems.append(f"{where}[{number}].status {item.get('status')!r} is not a task status")
        return problems
    if not isinstance(document, dict):  # meta, settings: map[string]any
        return [f"{where}: not an object"]
    return []


def _is_time(value: Any) -> bool:
    """A time; on SQLite (which has no time type, and which Go never reads) its ISO text."""
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return False
        return True
    return isinstance(value, datetime)


def row_problems(connection: Connection) -> tuple[int, list[str]]:
    """(rows checked, what the Go daemon could not read in them)."""
    problems: list[str] = []
    checked = 0
    for table in GO_TABLE_DEFINITIONS.values():
        for row in connection.execute(text(f"SELECT * FROM {table.name}")).mappings():
            checked += 1
            for column in table.columns:
                value = row[column.name]
                where = f"{table.name}[{row['id']}].{column.name}"
                if isinstance(column.type, GoJSON):
                    if value is None:
                        continue  # GORM's json serializer leaves the field empty
                    try:
                        document = json.loads(value)
                    except (TypeError, ValueError):
                        problems.append(f"{where} is not JSON")
                        continue
                    problems += _json_problems(table.name, column.name, where, document)
                elif value is None:
                    problems.append(f"{where} is NULL; Go's model has a plain value there")
                elif isinstance(column.type, GoUUID):
                    if not is_uuid(str(value)):
                        problems.append(f"{where} = {value!r} is not a UUID")
                elif isinstance(column.type, Boolean):
                    if value not in (True, False, 0, 1):
                        problems.append(f"{where} = {value!r} is not a boolean")
                elif isinstance(column.type, BigInteger):
                    if not isinstance(value, int):
                        problems.append(f"{where} = {value!r} is not an integer")
                elif isinstance(column.type, String):
                    if not isinstance(value, str) or (column.type.length and len(value) > column.type.length):
                        problems.append(f"{where} = {value!r} is not a string that fits")
                elif column.name.endswith("_at") and not _is_time(value):
                    problems.append(f"{where} = {value!r} is not a time")
    return checked, problems
