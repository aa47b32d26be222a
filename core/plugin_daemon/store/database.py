"""Engine, schema creation and migrations.

The schema is the project's business: ``open_database`` creates it on a new database and runs
the migrations a database older than this code still needs, in order, each in a transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from plugin_daemon.store.models import Base, EndpointRow, SchemaVersion
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

Migration = Callable[[Connection], None]


def _create_schema(connection: Connection) -> None:
    Base.metadata.create_all(connection)


def _create_endpoints(connection: Connection) -> None:
    EndpointRow.__table__.create(connection, checkfirst=True)  # type: ignore[attr-defined]


#: MIGRATIONS[n] brings a database from version n to n + 1. Append; never edit a released step.
MIGRATIONS: list[Migration] = [_create_schema, _create_endpoints]
SCHEMA_VERSION = len(MIGRATIONS)


def _ensure_postgres_database(url: str) -> None:
    """Create the database named in ``url`` if the server lacks it (as the Go daemon does)."""
    parsed = make_url(url)
    name = parsed.database
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
                log.info("created database %s", name)
    finally:
        admin.dispose()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def create_database_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql"):
        _ensure_postgres_database(url)
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(engine: Engine) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found before."""
    with engine.begin() as connection:
        Base.metadata.tables[SchemaVersion.__tablename__].create(connection, checkfirst=True)
        current = connection.execute(select(SchemaVersion.version)).scalar() or 0
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"the database schema is version {current}, newer than this daemon's {SCHEMA_VERSION}; "
            "upgrade plugin-daemon"
        )
    for version in range(current, SCHEMA_VERSION):
        with engine.begin() as connection:
            MIGRATIONS[version](connection)
            if version == 0:
                connection.execute(insert(SchemaVersion).values(id=1, version=1))
            else:
                connection.execute(update(SchemaVersion).values(version=version + 1))
        log.info("database schema migrated to version %d", version + 1)
    return current


class Database:
    """An engine with its schema in place, and short transactions on it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_database_engine(url)
        migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
