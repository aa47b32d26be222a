"""Go's DB_* settings, read as the Go daemon reads them, open the database they name."""

from __future__ import annotations

import uuid

import pytest
from plugin_daemon.daemon import open_database
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import MYSQL_ADMIN_URL, POSTGRES_ADMIN_URL


def test_the_url_is_assembled_from_the_parts(make_settings) -> None:  # type: ignore[no-untyped-def]
    postgres = make_settings(
        DB_TYPE="postgresql",
        DB_HOST="db",
        DB_USERNAME="dify",
        DB_PASSWORD="p@ss:w/rd",
        DB_DATABASE="dify_plugin",
        DB_SSL_MODE="require",
        DB_CHARSET="UTF8",
        DB_EXTRAS="options=-c search_path=plugins",
    )
    url = make_url(postgres.database_url)
    assert (url.drivername, url.host, url.port, url.username, url.password) == (
        "postgresql+psycopg",
        "db",
        5432,
        "dify",
        "p@ss:w/rd",
    )
    assert dict(url.query) == {"sslmode": "require", "client_encoding": "UTF8", "options": "-c search_path=plugins"}
    mysql = make_url(make_settings(DB_TYPE="mysql", DB_HOST="db", DB_USERNAME="root").database_url)
    assert (mysql.drivername, mysql.port, mysql.password, dict(mysql.query)) == (
        "mysql+pymysql",
        3306,
        None,
        {"charset": "utf8mb4"},
    )


@pytest.mark.mysql
def test_db_type_mysql_opens_and_creates_its_database(make_settings) -> None:  # type: ignore[no-untyped-def]
    name = f"plugin_daemon_test_{uuid.uuid4().hex[:12]}"
    settings = make_settings(DB_TYPE="mysql", DB_USERNAME="root", DB_PASSWORD="", DB_DATABASE=name, DB_PORT=3306)
    try:
        database = open_database(settings)
        with database.engine.connect() as connection:
            assert connection.execute(text("SELECT DATABASE()")).scalar() == name
        database.dispose()
    finally:
        admin = create_engine(MYSQL_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()


@pytest.mark.postgres
def test_db_type_pgbouncer_prepares_no_statements(make_settings) -> None:  # type: ignore[no-untyped-def]
    name = f"plugin_daemon_test_{uuid.uuid4().hex[:12]}"
    settings = make_settings(DB_TYPE="pgbouncer", DB_USERNAME="postgres", DB_DATABASE=name, DB_MAX_OPEN_CONNS=4)
    try:
        database = open_database(settings)
        with database.engine.connect() as connection:
            for _ in range(8):  # psycopg prepares a statement from its 5th run unless told not to
                connection.execute(text("SELECT 1"))
            assert connection.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
            assert connection.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar() == 0
        database.dispose()
    finally:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
