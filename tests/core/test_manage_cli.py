"""The management commands against a real daemon on loopback (the in-memory runtime of the test extension).

The same commands against real SDK plugins in the local runtime: tests/runtimes/local/test_local_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from plugin_daemon.cli import cli
from plugin_daemon.config import Settings

from tests.conftest import TEST_KEY
from tests.support.daemon_server import DaemonServer, free_port, running_daemon

ECHO_TOOL = Path(__file__).parents[1] / "plugins" / "echo_tool"
TENANT = "tenant-cli"
#: nothing of the daemon's own settings leaks into the client from the test run's environment
CLEAN_ENV = {"SERVER_KEY": None, "PLUGIN_DAEMON_KEY": None, "PLUGIN_DAEMON_URL": None, "PLUGIN_DAEMON_TENANT": None}


def run(*arguments: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(arguments), env={**CLEAN_ENV, **(env or {})})


@pytest.fixture
def server(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[DaemonServer]:
    with running_daemon(make_settings(PLATFORM="memory")) as running:
        yield running


@pytest.fixture
def package(tmp_path: Path) -> Path:
    target = tmp_path / "echo.difypkg"
    assert run("package", str(ECHO_TOOL), "-o", str(target)).exit_code == 0
    return target


def connection(server: DaemonServer) -> dict[str, str | None]:
    """The three settings a client reads from the environment."""
    return {"PLUGIN_DAEMON_URL": server.url, "PLUGIN_DAEMON_KEY": TEST_KEY, "PLUGIN_DAEMON_TENANT": TENANT}


def test_every_command_answers_in_json_from_the_environment_settings(server: DaemonServer, package: Path) -> None:
    env = connection(server)
    installed = run("install", str(package), "--json", env=env)
    assert installed.exit_code == 0, installed.output
    assert json.loads(installed.stdout)["status"] == "success"
    assert "installing tester/echo_tool" in installed.stderr  # progress lines off a terminal

    listing = json.loads(run("list", "--json", env=env).stdout)
    assert [(item["plugin_id"], item["runtime_type"], item["state"]) for item in listing] == [
        ("tester/echo_tool", "memory", "ready")
    ]
    status = json.loads(run("status", "tester/echo_tool", "--json", env=env).stdout)
    assert status["daemon"]["status"] == "ok"
    assert status["plugins"][0]["state"] == "ready" and status["plugins"][0]["runtime"] == "memory"
    tasks = json.loads(run("tasks", "--json", env=env).stdout)
    assert tasks[0]["status"] == "success"
    assert tasks[0]["plugins"][0]["plugin_unique_identifier"] == listing[0]["plugin_unique_identifier"]

    table = run("list", env=env)
    assert table.exit_code == 0 and "tester/echo_tool" in table.stdout and "ready" in table.stdout

    gone = run("uninstall", "tester/echo_tool", "--json", env=env)
    assert json.loads(gone.stdout) == {"uninstalled": [listing[0]["plugin_unique_identifier"]]}
    assert json.loads(run("list", "--json", env=env).stdout) == []
    again = run("uninstall", "tester/echo_tool", env=env)
    assert again.exit_code == 1 and "tester/echo_tool is not installed for tenant tenant-cli" in again.output


def test_install_into_a_named_runtime_and_refuse_an_unknown_one(server: DaemonServer, package: Path) -> None:
    env = connection(server)
    unknown = run("install", str(package), "--runtime", "nowhere", env=env)
    assert unknown.exit_code == 1 and "nowhere" in unknown.output and "Traceback" not in unknown.output
    named = run("install", str(package), "--runtime", "memory", env=env)
    assert named.exit_code == 0, named.output
    assert "installed tester/echo_tool" in named.output


def test_invoke_prints_a_tool_answer_as_it_streams(server: DaemonServer, package: Path) -> None:
    async def echo(data: dict[str, Any]) -> AsyncIterator[Any]:
        text = data["tool_parameters"]["text"]
        for part in (text[:3], text[3:]):
            yield {"type": "text", "message": {"text": part}}
        yield {"type": "json", "message": {"json_object": {"count": data["tool_parameters"]["count"]}}}

    server.daemon.control_panel.runtime("memory").handlers[("tool", "invoke_tool")] = echo  # type: ignore[attr-defined]
    env = connection(server)
    assert run("install", str(package), env=env).exit_code == 0
    arguments = ("invoke", "tester/echo_tool", "echo_tool", "echo", "--param", "text=hello", "--param", "count:=3")
    result = run(*arguments, env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["hello", '{"type":"json","message":{"json_object":{"count":3}}}']
    lines = [json.loads(line) for line in run(*arguments, "--json", env=env).stdout.splitlines()]
    assert [line["data"]["type"] for line in lines] == ["text", "text", "json"]
    assert all(line["code"] == 0 for line in lines)

    missing = run("invoke", "tester/nothing", "echo_tool", "echo", env=env)
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert len(missing.output.strip().splitlines()) == 1
    bad = run("invoke", "tester/echo_tool", "echo_tool", "echo", "--param", "novalue", env=env)
    assert bad.exit_code == 2 and "'novalue' is not key=value" in bad.output


def test_logs_without_follow_ends_and_prints_json_lines(server: DaemonServer) -> None:
    result = run("logs", "tester/echo_tool", "--json", env=connection(server))
    assert result.exit_code == 0, result.output
    assert all(json.loads(line) for line in result.stdout.splitlines())


def test_an_unreachable_daemon_is_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    commands = (["list"], ["status"], ["tasks"], ["uninstall", "a/b"], ["invoke", "a/b", "p", "t"], ["logs", "a/b"])
    for command in commands:
        result = run(*command, "--url", url, "--key", "k", "--tenant", "t")
        assert result.exit_code == 1, command
        expected = f"Error: cannot reach the daemon at {url}: [Errno 111] Connection refused"
        assert result.output.strip().splitlines() == [expected]


def test_a_rejected_key_says_where_it_was_looked_for(server: DaemonServer, tmp_path: Path) -> None:
    home = tmp_path / "client-home"
    home.mkdir()
    (home / "server_key").write_text("a-stale-key\n")
    env = {"PLUGIN_DAEMON_URL": server.url, "PLUGIN_DAEMON_TENANT": TENANT, "PLUGIN_STORAGE_LOCAL_ROOT": str(home)}
    for command in (["list"], ["status"], ["tasks"]):
        result = run(*command, env=env)
        assert result.exit_code == 1
        line = result.output.strip()
        assert "\n" not in line and "Traceback" not in line
        assert line.startswith(f"Error: the daemon at {server.url} refused the key from {home / 'server_key'}")
        assert "--key, PLUGIN_DAEMON_KEY, SERVER_KEY" in line and line.endswith("unauthorized")
    flag = run("list", "--key", "wrong", env=env)
    assert "refused the key from --key" in flag.output
    no_tenant = run("list", "--key", TEST_KEY, env={"PLUGIN_DAEMON_URL": server.url})
    assert no_tenant.exit_code == 1 and "no tenant: give --tenant or set PLUGIN_DAEMON_TENANT" in no_tenant.output


def test_extensions_lists_what_each_registers_and_plugins_stays_a_hidden_alias() -> None:
    described = {item["name"]: item for item in json.loads(run("extensions", "--json").stdout)}
    assert described["local"]["registers"]["runtimes"] == ["local"]
    assert "/plugin/{tenant_id}/debugging/logs" in described["debug"]["registers"]["routes"]
    assert "connector" in described["serverless"]["registers"]["commands"]
    assert run("plugins").stdout == run("extensions").stdout
    assert "  plugins " not in run("--help").stdout and "  extensions " in run("--help").stdout
