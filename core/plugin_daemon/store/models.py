"""Database tables (SQLAlchemy).

The Go daemon's tables, exactly as its GORM models declare them (langgenius/dify-plugin-daemon,
``internal/types/models``): the same names, columns, types, nullability, defaults and index
names, so that either daemon reads what the other wrote. What this daemon keeps beyond them lives
in tables of its own, named ``plugin_daemon_*``, which the Go daemon never looks at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from plugin_daemon.store.types import GoDateTime, GoJSON, GoUUID, go_text, new_id
from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Table, Text, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["new_id"]

#: the prefix of this daemon's own tables
OWN_PREFIX = "plugin_daemon_"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class GoModel:
    """models.Model: a uuid id (v7, set by the writer) and GORM's two timestamps."""

    id: Mapped[str] = mapped_column(GoUUID, primary_key=True, default=new_id, sort_order=-3)
    created_at: Mapped[datetime] = mapped_column(GoDateTime, nullable=True, default=utcnow, sort_order=-2)
    updated_at: Mapped[datetime] = mapped_column(
        GoDateTime, nullable=True, default=utcnow, onupdate=utcnow, sort_order=-1
    )


def _indexes(table: str, *columns: str) -> tuple[Index, ...]:
    """GORM's ``index`` tag: one index per column, named idx_<table>_<column>."""
    return tuple(Index(f"idx_{table}_{column}", column) for column in columns)


# --- the Go daemon's tables -----------------------------------------------------------------
class PluginRow(GoModel, Base):
    """models.Plugin: an installed package, shared by the tenants that installed it (``refers``)."""

    __tablename__ = "plugins"
    __table_args__ = (
        Index("idx_plugin_unique_identifier", "plugin_unique_identifier", unique=True),
        *_indexes("plugins", "plugin_id", "install_type"),
    )
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), nullable=True)
    plugin_id: Mapped[str] = mapped_column(String(255), nullable=True)
    refers: Mapped[int] = mapped_column(BigInteger, nullable=True, default=0, server_default=text("0"))
    install_type: Mapped[str] = mapped_column(String(127), nullable=True)
    manifest_type: Mapped[str] = mapped_column(String(127), nullable=True, default="plugin")
    #: the declaration of a debugging (remote) plugin; Go writes its empty declaration otherwise
    remote_declaration: Mapped[Any] = mapped_column(GoJSON, nullable=True)
    source: Mapped[str] = mapped_column(String(63), nullable=True, default="", server_default=text("''"))


class InstallationRow(GoModel, Base):
    """models.PluginInstallation: a plugin installed for one tenant."""

    __tablename__ = "plugin_installations"
    __table_args__ = (
        Index("idx_tenant_plugin", "tenant_id", "plugin_id", unique=True),
        *_indexes("plugin_installations", "tenant_id", "plugin_id", "plugin_unique_identifier"),
    )
    tenant_id: Mapped[str] = mapped_column(GoUUID, nullable=True)
    plugin_id: Mapped[str] = mapped_column(String(255), nullable=True)
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), nullable=True)
    runtime_type: Mapped[str] = mapped_column(String(127), nullable=True)
    endpoints_setups: Mapped[int] = mapped_column(BigInteger, nullable=True, default=0)
    endpoints_active: Mapped[int] = mapped_column(BigInteger, nullable=True, default=0)
    source: Mapped[str] = mapped_column(String(63), nullable=True, default="")
    meta: Mapped[Any] = mapped_column(GoJSON, nullable=True, default=dict)


class PluginDeclarationRow(GoModel, Base):
    """models.PluginDeclaration: a decoded package's declaration, kept from upload on."""

    __tablename__ = "plugin_declarations"
    __table_args__ = (
        UniqueConstraint("plugin_unique_identifier", name="uni_plugin_declarations_plugin_unique_identifier"),
        *_indexes("plugin_declarations", "plugin_id"),
    )
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), nullable=True)
    plugin_id: Mapped[str] = mapped_column(String(255), nullable=True)
    declaration: Mapped[Any] = mapped_column(GoJSON, nullable=True)

    @property
    def checksum(self) -> str:
        return self.plugin_unique_identifier.rpartition("@")[2]


class EndpointRow(GoModel, Base):
    """models.Endpoint: a public webhook reached at ``/e/{hook_id}/...``."""

    __tablename__ = "endpoints"
    __table_args__ = (
        UniqueConstraint("hook_id", name="uni_endpoints_hook_id"),
        *_indexes("endpoints", "tenant_id", "user_id", "plugin_id"),
    )
    name: Mapped[str] = mapped_column(String(127), nullable=True, default="default", server_default="default")
    hook_id: Mapped[str] = mapped_column(String(127), nullable=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=True)
    user_id: Mapped[str] = mapped_column(String(64), nullable=True, default="")
    plugin_id: Mapped[str] = mapped_column(String(64), nullable=True)
    expired_at: Mapped[datetime] = mapped_column(GoDateTime, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=True, default=True)
    #: as stored: secret-input values are encrypted by Dify
    settings: Mapped[Any] = mapped_column(GoJSON, nullable=True, default=dict)


class ServerlessRuntimeRow(GoModel, Base):
    """models.ServerlessRuntime: where a package was deployed as a function."""

    __tablename__ = "serverless_runtimes"
    __table_args__ = (
        UniqueConstraint("plugin_unique_identifier", name="uni_serverless_runtimes_plugin_unique_identifier"),
        *_indexes("serverless_runtimes", "checksum"),
    )
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), nullable=True)
    function_url: Mapped[str] = mapped_column(String(255), nullable=True)
    function_name: Mapped[str] = mapped_column(String(127), nullable=True)
    type: Mapped[str] = mapped_column(String(127), nullable=True)
    checksum: Mapped[str] = mapped_column(String(127), nullable=True)


class CategoryInstallation(GoModel, Base):
    __abstract__ = True
    tenant_id: Mapped[str] = mapped_column(GoUUID, nullable=False)
    provider: Mapped[str] = mapped_column(String(127), nullable=False)
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), nullable=True)
    plugin_id: Mapped[str] = mapped_column(String(255), nullable=True)


def _category_indexes(table: str) -> tuple[Index, ...]:
    return _indexes(table, "tenant_id", "provider", "plugin_unique_identifier", "plugin_id")


class DatasourceInstallationRow(CategoryInstallation):
    __tablename__ = "datasource_installations"
    __table_args__ = _category_indexes("datasource_installations")


class ToolInstallationRow(CategoryInstallation):
    __tablename__ = "tool_installations"
    __table_args__ = _category_indexes("tool_installations")


class ModelInstallationRow(CategoryInstallation):
    __tablename__ = "ai_model_installations"
    __table_args__ = _category_indexes("ai_model_installations")


class AgentStrategyInstallationRow(CategoryInstallation):
    __tablename__ = "agent_strategy_installations"
    __table_args__ = _category_indexes("agent_strategy_installations")


class TriggerInstallationRow(CategoryInstallation):
    __tablename__ = "trigger_installations"
    __table_args__ = _category_indexes("trigger_installations")


#: declaration key -> table of per-category installations
CATEGORY_TABLES: dict[str, type[CategoryInstallation]] = {
    "tool": ToolInstallationRow,
    "model": ModelInstallationRow,
    "agent_strategy": AgentStrategyInstallationRow,
    "datasource": DatasourceInstallationRow,
    "trigger": TriggerInstallationRow,
}


class InstallTaskRow(GoModel, Base):
    """models.InstallTask; ``plugins`` is a list of InstallTaskPluginStatus objects."""

    __tablename__ = "install_tasks"
    __table_args__ = (Index("idx_install_tasks_status", "status"),)
    status: Mapped[str] = mapped_column(String(50), nullable=False)
    tenant_id: Mapped[str] = mapped_column(GoUUID, nullable=False)
    total_plugins: Mapped[int] = mapped_column(BigInteger, nullable=False)
    completed_plugins: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    plugins: Mapped[Any] = mapped_column(GoJSON, nullable=True, default=list)


class TenantStorageRow(GoModel, Base):
    """models.TenantStorage: bytes a plugin stores in a tenant (its files are under
    PERSISTENCE_STORAGE_PATH)."""

    __tablename__ = "tenant_storages"
    __table_args__ = _indexes("tenant_storages", "tenant_id", "plugin_id")
    tenant_id: Mapped[str] = mapped_column(String(255), nullable=False)
    plugin_id: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class PluginReadmeRecordRow(GoModel, Base):
    """models.PluginReadmeRecord (this daemon reads readmes from the package instead)."""

    __tablename__ = "plugin_readme_records"
    __table_args__ = _indexes("plugin_readme_records", "plugin_unique_identifier")
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), nullable=False)
    language: Mapped[str] = mapped_column(String(10), nullable=False)
    content: Mapped[str] = mapped_column(go_text(), nullable=False)


#: the Go daemon's tables, in the order its AutoMigrate creates them
GO_TABLES = [
    PluginRow,
    InstallationRow,
    PluginDeclarationRow,
    EndpointRow,
    ServerlessRuntimeRow,
    DatasourceInstallationRow,
    ToolInstallationRow,
    ModelInstallationRow,
    InstallTaskRow,
    TenantStorageRow,
    AgentStrategyInstallationRow,
    TriggerInstallationRow,
    PluginReadmeRecordRow,
]
#: their Table objects, by name
GO_TABLE_DEFINITIONS: dict[str, Table] = {model.__tablename__: cast(Table, model.__table__) for model in GO_TABLES}


# --- this daemon's own tables -------------------------------------------------------------
class SchemaVersion(Base):
    __tablename__ = "plugin_daemon_schema"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class VerificationRow(Base):
    """The signature verification of an uploaded package (the Go daemon reads it from the package)."""

    __tablename__ = "plugin_daemon_verifications"
    plugin_unique_identifier: Mapped[str] = mapped_column(String(255), primary_key=True)
    verification: Mapped[Any] = mapped_column(GoJSON, nullable=True)


class StorageLockRow(Base):
    """One row per (tenant, plugin) that has stored something: writers of that plugin's storage
    take it first, so their writes and the usage count in ``tenant_storages`` never interleave
    (Go's ``tenant_storages`` has no unique key to lock on)."""

    __tablename__ = "plugin_daemon_storage_locks"
    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    writes: Mapped[int] = mapped_column(BigInteger, default=0)


class KeyValueRow(Base):
    """Small daemon state that must survive restarts (debugging keys, function URLs, ...)."""

    __tablename__ = "plugin_daemon_kv"
    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(GoDateTime, nullable=True)
