"""The container files: what docker/Dockerfile sets and runs, and the compose file that swaps the image
of Dify's plugin_daemon service, read with the settings the daemon will really load.

No image is built here; what the image runs (`plugin-daemon serve`, as PID 1 or under tini, with
Dify's environment) is tested in tests/runtimes/local/test_pid1.py and test_dify_compose_e2e.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from plugin_daemon.config import load_settings
from plugin_daemon.go_settings import warnings_for

from tests.support.dify_compose import plugin_daemon_environment

DOCKER = Path(__file__).parents[2] / "docker"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()


def image_environment() -> dict[str, str]:
    """The ENV instructions of the final stage, as Docker sets them (PATH left out)."""
    text = DOCKERFILE.replace("\\\n", " ")
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in shlex.split(line[4:]):
                name, _, value = pair.partition("=")
                values[name] = value
    values.pop("PATH", None)
    return values


def test_the_image_is_slim_python_with_tini_and_go_s_ports_and_storage() -> None:
    assert re.search(r"^FROM python:3\.12-slim$", DOCKERFILE, re.MULTILINE)
    assert "pip install --no-cache-dir uv" in DOCKERFILE
    assert "uv sync --frozen --no-dev --extra all" in DOCKERFILE  # every runtime
    assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--"]' in DOCKERFILE
    assert 'CMD ["plugin-daemon", "serve"]' in DOCKERFILE
    assert "EXPOSE 5002 5003" in DOCKERFILE
    assert re.search(r"HEALTHCHECK .*/health/check", DOCKERFILE.replace("\\\n", " "))
    assert 'VOLUME ["/app/storage"]' in DOCKERFILE


def test_the_image_environment_keeps_everything_under_app_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in image_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SERVER_KEY", "an-operator-s-own-key-3c7f1e0a9b")
    settings = load_settings(_env_file=None)
    assert (settings.SERVER_HOST, settings.SERVER_PORT) == ("0.0.0.0", 5002)
    assert (settings.PLUGIN_REMOTE_INSTALLING_HOST, settings.PLUGIN_REMOTE_INSTALLING_PORT) == ("0.0.0.0", 5003)
    root = Path("/app/storage")
    assert settings.home == root
    for path in (settings.working_path, settings.package_path, settings.media_path, settings.persistence_path):
        assert path.is_relative_to(root)
    assert settings.database_url == f"sqlite:///{root / 'plugin_daemon.db'}"


def test_dify_s_environment_over_the_image_s(monkeypatch: pytest.MonkeyPatch) -> None:
    dify = plugin_daemon_environment(SERVER_KEY="an-operator-s-own-key-3c7f1e0a9b")
    for name, value in {**image_environment(), **dify}.items():  # compose's environment wins over ENV
        monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.home == Path("/app/storage")
    assert settings.working_path == Path("/app/storage/cwd")
    assert settings.package_path == Path("/app/storage/plugin_packages")
    assert settings.installed_path == Path("/app/storage/plugin")
    assert settings.media_path == Path("/app/storage/assets")
    assert settings.database_url.startswith("postgresql+psycopg://postgres:difyai123456@db_postgres:5432/dify_plugin")
    assert settings.FORCE_VERIFYING_SIGNATURE is True
    assert settings.SERVER_HOST == "0.0.0.0"
    assert warnings_for(dify) == [
        "REDIS_HOST, REDIS_PASSWORD are set but not supported: Redis: this daemon runs as one node and keeps no "
        "state in Redis (Go needs it for its cluster)"
    ]


def test_the_compose_file_changes_only_the_image_of_dify_s_service() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.plugin-daemon.yaml").read_text())
    service = compose["services"]["plugin_daemon"]
    assert set(service) == {"image", "stop_grace_period"}  # environment, volume, ports: Dify's own
    assert service["image"] == "${PLUGIN_DAEMON_IMAGE:-plugin-daemon:latest}"
