"""The connector as a service: the SRI routes and their key, launches through the daemon's own
SRI client (idempotent, failures reported), and the ``plugin-daemon connector`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from plugin_daemon.packages import build_package, decode_package
from plugin_daemon_serverless.connector.provider import load_provider, provider_names
from plugin_daemon_serverless.connector_client import ConnectorClient, ConnectorError
from plugin_daemon_serverless.sri import FunctionInfo, package_filename

from tests.runtimes.local.local_runtime_support import PLUGINS
from tests.runtimes.serverless.serverless_support import CONNECTOR_KEY, ConnectorServer, running_connector
from tests.support.daemon_server import free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.anyio

LAUNCH_DEADLINE = 600.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def connector(home: Path) -> Iterator[ConnectorServer]:
    with running_connector(home / "connector", daemon_url="http://127.0.0.1:9") as running:
        yield running


def package(plugin: str) -> tuple[str, bytes]:
    data = build_package(PLUGINS / plugin)
    return str(decode_package(data).identifier), data


async def launch(connector: ConnectorServer, plugin: str) -> tuple[FunctionInfo, list[str]]:
    identifier, data = package(plugin)
    steps: list[str] = []
    async with httpx.AsyncClient() as client:
        sri = ConnectorClient(connector.url, CONNECTOR_KEY, client, launch_timeout=LAUNCH_DEADLINE)
        await sri.ping()
        function = await sri.launch(identifier, data, verified=False, progress=steps.append)
        assert await sri.find(identifier) == FunctionInfo(
            function.id, function.name, function.endpoint, f"local:function:{function.name}", "running"
        )
    return function, steps


def test_sri_routes_need_the_key(connector: ConnectorServer) -> None:
    for method, path in [("POST", "/ping"), ("GET", "/v1/runner/instances"), ("POST", "/v1/launch")]:
        assert httpx.request(method, connector.url + path, timeout=10).status_code == 401
        wrong = httpx.request(method, connector.url + path, headers={"Authorization": "nope"}, timeout=10)
        assert wrong.status_code == 401
    for method in ("GET", "POST"):
        pong = httpx.request(method, connector.url + "/ping", headers={"Authorization": CONNECTOR_KEY}, timeout=10)
        assert pong.json() == "pong"
    bearer = httpx.post(connector.url + "/ping", headers={"Authorization": f"Bearer {CONNECTOR_KEY}"}, timeout=10)
    assert bearer.json() == "pong"


def test_instances_of_an_unknown_package(connector: ConnectorServer) -> None:
    filename = "tester@nothing@0.0.1@" + "a" * 64 + ".difypkg"
    assert connector.client.get("/v1/runner/instances", params={"filename": filename}).json() == {
        "error": "",
        "Items": [],
    }
    assert connector.client.get("/v1/runner/instances", params={"filename": "../etc"}).status_code == 400


def _launch_lines(connector: ConnectorServer, filename: str, data: bytes) -> list[str]:
    response = connector.client.post(
        "/v1/launch", files={"context": (filename, data)}, data={"verified": "false", "metadata": "{}"}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    return [line for line in response.text.split("\n") if line]


def test_launch_refuses_a_broken_or_misnamed_package(connector: ConnectorServer) -> None:
    lines = _launch_lines(connector, "tester@x@0.0.1@" + "b" * 64 + ".difypkg", b"not a zip")
    assert '"State":"failed"' in lines[-1] and "invalid package" in lines[-1]
    identifier, data = package("echo_tool")
    wrong = package_filename(identifier).replace("@0.0.1@", "@0.0.2@")
    lines = _launch_lines(connector, wrong, data)
    assert '"State":"failed"' in lines[-1] and "its content is" in lines[-1]


async def test_launch_is_idempotent_per_checksum(connector: ConnectorServer) -> None:
    results: list[tuple[FunctionInfo, list[str]]] = []

    async def one() -> None:
        results.append(await launch(connector, "echo_tool"))

    with anyio.fail_after(LAUNCH_DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(one)
            group.start_soon(one)
        again, steps = await launch(connector, "echo_tool")
    assert results[0][0] == results[1][0] == again
    assert any(step.startswith("run: endpoint=") for step in results[0][1])
    assert "healthz: function already deployed" in steps
    function = connector.function_of("echo_tool")
    assert function["cold_starts"] == 1
    assert len(connector.functions()) == 1


async def test_a_function_that_cannot_start_fails_its_launch(connector: ConnectorServer) -> None:
    with anyio.fail_after(LAUNCH_DEADLINE), pytest.raises(ConnectorError) as failure:
        await launch(connector, "broken_start")
    assert "deployment failed at stage run" in str(failure.value)
    assert "cannot start: missing config" in str(failure.value)
    assert not any(f["identifier"].startswith("tester/broken_start:") for f in connector.functions().values())


def test_providers_are_stevedore_drivers(tmp_path: Path) -> None:
    assert "local" in provider_names()
    from plugin_daemon_serverless.connector.options import ConnectorOptions

    options = ConnectorOptions(api_key="k", public_url="http://x", home=tmp_path)
    with pytest.raises(Exception, match="nope"):
        load_provider("nope", options)


def _cli(*args: str, home: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "plugin_daemon.cli", "connector", "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _finish(process: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    return process.returncode, output.decode(errors="replace")


def test_connector_command_serves_the_sri(tmp_path: Path) -> None:
    port = free_port()
    process = _cli("--port", str(port), "--api-key", "cli-key-51f0", home=tmp_path)
    try:

        def pong() -> bool:
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/ping", headers={"Authorization": "cli-key-51f0"})
            except httpx.HTTPError:
                assert process.poll() is None, "the connector exited"
                return False
            return response.json() == "pong"

        wait_for(pong, 60, "the connector to answer /ping")
        process.send_signal(signal.SIGTERM)
        code, output = _finish(process)
        assert code in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal after a clean shutdown
        assert "Application shutdown complete" in output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--api-key", "k", "--provider", "nope"], "unknown provider"),
        (["--api-key", " "], "--api-key"),
        (["--api-key", "k", "--provider", "aws_lambda"], "needs AWS_LAMBDA_ROLE_ARN"),
    ],
)
def test_connector_command_refuses_bad_options(tmp_path: Path, args: list[str], words: str) -> None:
    code, output = _finish(_cli(*args, home=tmp_path))
    assert code != 0 and words in output, output
