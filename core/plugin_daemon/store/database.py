"""Engine, schema and migrations.

The schema is the Go daemon's (see :mod:`plugin_daemon.store.models`), plus this daemon's own
``plugin_daemon_*`` tables. At start ``open_database`` looks at what the database holds:

- nothing: it creates both;
- the Go daemon's tables: it checks that they have the columns this daemon reads and writes,
  creates the Go tables an older Go daemon did not have yet, and adds its own tables;
- this daemon's schema: it runs the migrations a database older than this code still needs;
- anything else (another application's tables, a Go table changed so that this daemon could not
  use it, a schema newer than this code) stops the start with a :class:`SchemaError` that says what
  was found. Migrations never change a Go table's columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from plugin_daemon.store.legacy import LEGACY_VERSIONS, LegacyConversionError, convert_legacy_layout
from plugin_daemon.store.models import GO_TABLE_DEFINITIONS, OWN_PREFIX, Base, SchemaVersion
from plugin_daemon.store.types import GoUUID
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateTable
from sqlalchemy.types import TypeEngine

log = logging.getLogger(__name__)

#: version 3 is the Go daemon's schema; 1 and 2 were this daemon's own layout before it
SCHEMA_VERSION = 3
GO_TABLE_NAMES = set(GO_TABLE_DEFINITIONS)

#: called with (tenant_id, plugin_id, key, value) for each stored value a legacy database held
StorageWriter = Callable[[str, str, str, bytes], None]


class SchemaError(RuntimeError):
    """The database holds something this daemon cannot use; the message says what and what to do."""


@dataclass(frozen=True)
class EngineOptions:
    """How to connect: the Go daemon's DB_MAX_OPEN_CONNS, DB_MAX_IDLE_CONNS, DB_CONN_MAX_LIFETIME,
    DB_DEFAULT_DATABASE, and no prepared statements behind PgBouncer (DB_TYPE=pgbouncer)."""

    max_open: int = 30
    max_idle: int = 10
    max_lifetime: int = 3600
    default_database: str = ""
    prepared_statements: bool = True


def ensure_database(url: str, default_database: str = "") -> None:
    """Create the database named in ``url`` if the server lacks it (as the Go daemon does)."""
    parsed = make_url(url)
    name = parsed.database
    if parsed.get_backend_name() == "postgresql":
        admin_url = parsed.set(database=default_database or "postgres")
        exists_query = "SELECT 1 FROM pg_database WHERE datname = :n"
        create = f'CREATE DATABASE "{name}"'
    else:
        admin_url = parsed.set(database=default_database or "mysql")
        exists_query = "SELECT 1 FROM information_schema.schemata WHERE schema_name = :n"
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if not connection.execute(text(exists_query), {"n": name}).first():
                connection.execute(text(create))
                log.info("created database %s", name)
    finally:
        admin.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_database_engine(url: str, options: EngineOptions | None = None) -> Engine:
    pool = options or EngineOptions()
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    backend = make_url(url).get_backend_name()
    connect_args: dict[str, object] = {}
    if backend == "postgresql" and not pool.prepared_statements:
        connect_args["prepare_threshold"] = None
    engine = create_engine(
        url,
        connect_args=connect_args,
        pool_size=max(1, pool.max_idle),
        max_overflow=max(0, pool.max_open - pool.max_idle),
        pool_recycle=pool.max_lifetime if pool.max_lifetime > 0 else -1,
        pool_pre_ping=True,
    )
    try:  # as the Go daemon: the database itself first, and only if that fails the default one
        engine.connect().close()
    except OperationalError:
        ensure_database(url, pool.default_database)
    return engine


# --- what a database holds ------------------------------------------------------------------
def _family(kind: TypeEngine[object] | object, dialect_name: str) -> str:
    """A coarse type family: two columns of one family hold the same values for this daemon."""
    if isinstance(kind, GoUUID):
        return "text"
    name = type(kind).__name__.lower()
    if "bool" in name or (dialect_name in ("mysql", "mariadb") and name == "tinyint"):
        return "bool"
    if "int" in name:
        return "int"
    if "time" in name or "date" in name:
        return "time"
    if any(part in name for part in ("char", "text", "string", "uuid", "json", "clob")):
        return "text"
    return name


def check_go_tables(connection: Connection) -> list[str]:
    """What in the Go tables this daemon could not use (empty: all is well)."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    dialect = connection.dialect.name
    problems = []
    for table in GO_TABLE_DEFINITIONS.values():
        if table.name not in present:
            continue
        found = {column["name"]: column for column in inspector.get_columns(table.name)}
        for column in table.columns:
            have: Any = found.get(column.name)
            if have is None:
                problems.append(f"{table.name}.{column.name} is missing")
                continue
            wanted, actual = _family(column.type, dialect), _family(have["type"], dialect)
            if wanted != actual:
                problems.append(
                    f"{table.name}.{column.name} is {have['type']}, expected {column.type.compile(connection.dialect)}"
                )
        for name, reflected in found.items():
            if name not in table.columns and not reflected.get("nullable", True) and reflected.get("default") is None:
                problems.append(f"{table.name}.{name} is an unknown column that may not be null")
    return problems


def _create_current(connection: Connection) -> None:
    """Create every table missing (Go's and this daemon's); never alter one that exists."""
    if connection.dialect.name in ("mysql", "mariadb"):
        _create_mysql_tables_with_their_indexes(connection)
    Base.metadata.create_all(connection, checkfirst=True)


def _create_mysql_tables_with_their_indexes(connection: Connection) -> None:
    """On MySQL each CREATE INDEX rebuilds its table: create each missing table with its indexes
    inline, as GORM's MySQL migrator does (one statement; seconds less per new database)."""
    present = set(inspect(connection).get_table_names())
    preparer = connection.dialect.identifier_preparer
    for table in Base.metadata.sorted_tables:
        if table.name in present:
            continue
        create = str(CreateTable(table).compile(dialect=connection.dialect)).rstrip().rstrip(")").rstrip()
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            columns = ", ".join(preparer.quote(column.name) for column in index.columns)
            unique = "UNIQUE " if index.unique else ""
            create += f",\n\t{unique}INDEX {preparer.quote(str(index.name))} ({columns})"
        connection.execute(text(create + "\n)"))


def _set_version(connection: Connection, version: int) -> None:
    if connection.execute(select(SchemaVersion.version)).first() is None:
        connection.execute(SchemaVersion.__table__.insert().values(id=1, version=version))  # type: ignore[attr-defined]
    else:
        connection.execute(SchemaVersion.__table__.update().values(version=version))  # type: ignore[attr-defined]


#: MIGRATIONS[n] brings a database from version n to n + 1, for n >= SCHEMA_VERSION (3) only.
#: Append; never edit a released step; never change a Go column in a way Go could not read.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def migrate(engine: Engine, storage_writer: StorageWriter | None = None) -> int | None:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version found (None: not ours before)."""
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        current = None
        if SchemaVersion.__tablename__ in tables:
            current = connection.execute(select(SchemaVersion.version)).scalar()
    where = engine.url.render_as_string(hide_password=True)
    if current is not None and current > SCHEMA_VERSION:
        raise SchemaError(
            f"the database {where} has plugin-daemon schema version {current}, newer than this daemon's "
            f"{SCHEMA_VERSION}; run a plugin-daemon at least as new as the one that wrote it"
        )
    if current is None:
        foreign = sorted(name for name in tables if name not in GO_TABLE_NAMES and not name.startswith(OWN_PREFIX))
        if foreign and not tables & GO_TABLE_NAMES:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise SchemaError(
                f"the database {where} holds tables that are neither the Go plugin daemon's nor plugin-daemon's "
                f"({shown}); point DB_DATABASE (or DATABASE_URL) at the plugin daemon's own database, or an empty one"
            )
    elif current in LEGACY_VERSIONS:
        try:
            with engine.begin() as connection:
                convert_legacy_layout(connection, storage_writer)
                _set_version(connection, SCHEMA_VERSION)
        except LegacyConversionError as exc:
            raise SchemaError(f"cannot convert the database {where} to the Go daemon's schema: {exc}") from exc
        log.info("database converted from plugin-daemon schema %d to the Go daemon's schema", current)
        return current
    with engine.begin() as connection:
        problems = check_go_tables(connection)
        if problems:
            raise SchemaError(
                f"the Go daemon's tables in {where} have been changed in a way plugin-daemon does not "
                f"understand: {'; '.join(problems[:10])}"
            )
        _create_current(connection)
        if current is None:
            _set_version(connection, SCHEMA_VERSION)
            log.info("database schema: %s", "the Go daemon's, adopted" if tables & GO_TABLE_NAMES else "created")
    for version in range(current or SCHEMA_VERSION, SCHEMA_VERSION):
        with engine.begin() as connection:
            MIGRATIONS[version](connection)
            _set_version(connection, version + 1)
        log.info("database schema migrated to version %d", version + 1)
    return current


class Database:
    """An engine with its schema in place, and short transactions on it."""

    def __init__(
        self, url: str, *, options: EngineOptions | None = None, storage_writer: StorageWriter | None = None
    ) -> None:
        self.url = url
        where = make_url(url).render_as_string(hide_password=True)
        engine = None
        try:
            engine = create_database_engine(url, options)
            migrate(engine, storage_writer)
        except SQLAlchemyError as exc:
            if engine is not None:
                engine.dispose()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            raise SchemaError(f"cannot open the database {where}: {reason}") from exc
        except BaseException:
            if engine is not None:
                engine.dispose()
            raise
        self.engine = engine
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def tenant_ids_are_uuids(self) -> bool:
        """Whether tenant ids must be UUIDs: the Go schema's tenant columns are uuid on PostgreSQL and
        char(36) on MySQL; only SQLite takes anything."""
        return self.dialect in ("postgresql", "mysql", "mariadb")

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
