"""Shared fixtures: settings in a temporary home, databases (SQLite and the real PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from plugin_daemon.config import Settings
from sqlalchemy import create_engine, text

TEST_KEY = "test-server-key-0123456789"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MYSQL_ADMIN_URL = "mysql+pymysql://root@127.0.0.1:3306/mysql?charset=utf8mb4"


def server_available(url: str = POSTGRES_ADMIN_URL) -> bool:
    try:
        engine = create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "PLUGIN_DAEMON_HOME": tmp_path / "home",
            "SERVER_KEY": TEST_KEY,
            "DIFY_INNER_API_KEY": "inner-key",
            "PLUGIN_REMOTE_INSTALLING_PORT": 0,  # a free port: a taken one stops the start
            "FORCE_VERIFYING_SIGNATURE": False,  # the test plugins are unsigned; signature tests turn it on
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


def fresh_database(admin_url: str, url: str, drop: str, server: str) -> Iterator[str]:
    """A database named ``plugin_daemon_test_<random>`` on a local server, dropped afterwards."""
    if not server_available(admin_url):
        pytest.fail(f"{server} is required for this test and is not reachable")
    name = f"plugin_daemon_test_{uuid.uuid4().hex[:12]}"
    yield url.format(name=name)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(drop.format(name=name)))
    admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    yield from fresh_database(
        POSTGRES_ADMIN_URL,
        "postgresql+psycopg://postgres@127.0.0.1:5432/{name}",
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
        "PostgreSQL on 127.0.0.1:5432",
    )


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh database on the local MariaDB (root, no password), dropped afterwards."""
    yield from fresh_database(
        MYSQL_ADMIN_URL,
        "mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4",
        "DROP DATABASE IF EXISTS `{name}`",
        "MariaDB (or MySQL) on 127.0.0.1:3306",
    )


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue({"postgresql": "postgres_url", "mysql": "mysql_url"}[request.param])


ECHO_TOOL_NEW = Path(__file__).parent / "plugins" / "echo_tool_new"


@pytest.fixture(scope="session", autouse=True)
def echo_tool_new_lock() -> None:
    """Give tests/plugins/echo_tool_new its uv.lock, as its author would with ``uv lock``.

    The repository keeps no lock file (a lock names the package index it resolved against), so
    the first test session of a checkout makes it, with the Python 3.12 the plugin asks for.
    """
    if (ECHO_TOOL_NEW / "uv.lock").exists():
        return
    import anyio
    from plugin_daemon_local.interpreters import InterpreterFinder
    from uv import find_uv_bin

    uv = find_uv_bin()
    python = anyio.run(InterpreterFinder(uv_bin=uv).find, "3.12")
    if not python.matches:
        pytest.fail(f"tests/plugins/echo_tool_new needs Python 3.12, found only {python.version}")
    subprocess.run(
        [uv, "lock", "--python", python.path],
        cwd=ECHO_TOOL_NEW,
        env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        check=True,
        timeout=600,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def daemon_port() -> int:
    """The port of the module's daemon, chosen before the functions it deploys are told where to call back."""
    from tests.support.daemon_server import free_port

    return free_port()
