"""Database tables (SQLAlchemy). Names and columns follow the Go daemon's where it has them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Timestamped:
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class SchemaVersion(Base):
    __tablename__ = "plugin_daemon_schema"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class PluginDeclarationRow(Timestamped, Base):
    """A decoded package: its declaration, kept from upload on."""

    __tablename__ = "plugin_declarations"
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), unique=True)
    plugin_id: Mapped[str] = mapped_column(String(255), index=True)
    checksum: Mapped[str] = mapped_column(String(64))
    declaration: Mapped[dict[str, Any]]
    verification: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class PluginRow(Timestamped, Base):
    """An installed plugin package, shared by the tenants that installed it (``refers``)."""

    __tablename__ = "plugins"
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), unique=True)
    plugin_id: Mapped[str] = mapped_column(String(255), index=True)
    refers: Mapped[int] = mapped_column(Integer, default=0)
    install_type: Mapped[str] = mapped_column(String(32))
    manifest_type: Mapped[str] = mapped_column(String(32), default="plugin")
    source: Mapped[str] = mapped_column(String(32), default="")
    remote_declaration: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class InstallationRow(Timestamped, Base):
    """A plugin installed for one tenant."""

    __tablename__ = "plugin_installations"
    __table_args__ = (UniqueConstraint("tenant_id", "plugin_id"),)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    plugin_id: Mapped[str] = mapped_column(String(255))
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), index=True)
    runtime_type: Mapped[str] = mapped_column(String(32))
    endpoints_setups: Mapped[int] = mapped_column(Integer, default=0)
    endpoints_active: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(32), default="")
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CategoryInstallation(Timestamped, Base):
    __abstract__ = True
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(255))
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), index=True)
    plugin_id: Mapped[str] = mapped_column(String(255))


class ToolInstallationRow(CategoryInstallation):
    __tablename__ = "tool_installations"


class ModelInstallationRow(CategoryInstallation):
    __tablename__ = "ai_model_installations"


class AgentStrategyInstallationRow(CategoryInstallation):
    __tablename__ = "agent_strategy_installations"


class DatasourceInstallationRow(CategoryInstallation):
    __tablename__ = "datasource_installations"


class TriggerInstallationRow(CategoryInstallation):
    __tablename__ = "trigger_installations"


#: declaration key -> table of per-category installations
CATEGORY_TABLES: dict[str, type[CategoryInstallation]] = {
    "tool": ToolInstallationRow,
    "model": ModelInstallationRow,
    "agent_strategy": AgentStrategyInstallationRow,
    "datasource": DatasourceInstallationRow,
    "trigger": TriggerInstallationRow,
}


class InstallTaskRow(Timestamped, Base):
    __tablename__ = "install_tasks"
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    total_plugins: Mapped[int] = mapped_column(Integer)
    completed_plugins: Mapped[int] = mapped_column(Integer, default=0)
    plugins: Mapped[list[Any]] = mapped_column(JSON, default=list)


class StorageItemRow(Base):
    """One value of a plugin's key-value storage, scoped to (tenant, plugin)."""

    __tablename__ = "plugin_storage_items"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class TenantStorageRow(Base):
    """Bytes used by a plugin's storage in a tenant (for the quota)."""

    __tablename__ = "tenant_storages"
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, default=0)


class KeyValueRow(Base):
    """Small daemon state that must survive restarts (debugging keys, function URLs, ...)."""

    __tablename__ = "plugin_daemon_kv"
    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EndpointRow(Timestamped, Base):
    """A plugin endpoint set up by a tenant: a public webhook reached at ``/e/{hook_id}/...``."""

    __tablename__ = "endpoints"
    name: Mapped[str] = mapped_column(String(127), default="default")
    hook_id: Mapped[str] = mapped_column(String(127), unique=True)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64), default="")
    plugin_id: Mapped[str] = mapped_column(String(255), index=True)
    expired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: as stored: secret-input values are encrypted by Dify
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
