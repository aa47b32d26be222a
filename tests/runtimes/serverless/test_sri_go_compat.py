"""SRI compatibility with the Go daemon, both ways.

- This daemon's SRI client against a connector written to Go's client (``GoStyleConnector``:
  ``/ping`` by POST only, ``Items`` capitalised and ``null`` when empty, launch lines as
  ``data:{...}`` between ``event:`` lines).
- This project's connector called exactly as Go's client calls it (``GoSRIClient``): ping,
  lookup, launch with Go's reading of the stream, then the function invoked with Go's headers
  and no signature, its frames read as Go reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from plugin_daemon.packages import build_package, decode_package
from plugin_daemon_serverless.connector_client import ConnectorClient, ConnectorError
from plugin_daemon_serverless.sri import FunctionInfo, package_filename

from tests.runtimes.local.local_runtime_support import PLUGINS, tool_request
from tests.runtimes.serverless.serverless_support import CONNECTOR_KEY, ConnectorServer, running_connector
from tests.support.daemon_server import AppServer
from tests.support.go_sri import GoSRIClient, GoStyleConnector

GO_KEY = "go-style-connector-key-3e1d"
CALL_DEADLINE = 30.0
LAUNCH_DEADLINE = 600.0
IDENTIFIER = "tester/echo_tool:0.0.1@" + "c" * 64


@pytest.fixture(scope="module")
def go_connector() -> Iterator[tuple[GoStyleConnector, AppServer]]:
    stand_in = GoStyleConnector(GO_KEY)
    server = AppServer(stand_in.app(), "go-style connector", {"Authorization": GO_KEY}).start()
    try:
        yield stand_in, server
    finally:
        server.stop()


async def _with_client(url: str, key: str, work):  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as http:
        with anyio.fail_after(CALL_DEADLINE):
            return await work(ConnectorClient(url, key, http, launch_timeout=CALL_DEADLINE))


def test_our_client_pings_a_go_style_connector_by_post(go_connector: tuple[GoStyleConnector, AppServer]) -> None:
    stand_in, server = go_connector

    async def work(client: ConnectorClient) -> None:
        await client.ping()

    anyio.run(_with_client, server.url, GO_KEY, work)
    assert stand_in.pings[-1] == "POST"
    with pytest.raises(ConnectorError, match="401"):
        anyio.run(_with_client, server.url, "wrong-key", work)


def test_our_client_launches_and_finds_on_a_go_style_connector(
    go_connector: tuple[GoStyleConnector, AppServer],
) -> None:
    stand_in, server = go_connector
    steps: list[str] = []

    async def work(client: ConnectorClient) -> tuple[FunctionInfo | None, FunctionInfo, FunctionInfo | None]:
        before = await client.find(IDENTIFIER)  # "Items": null
        launched = await client.launch(IDENTIFIER, b"package bytes", verified=True, progress=steps.append)
        return before, launched, await client.find(IDENTIFIER)

    before, launched, after = anyio.run(_with_client, server.url, GO_KEY, work)
    assert before is None
    assert launched == FunctionInfo("fn-echo_tool-id", "fn-echo_tool", "http://functions.invalid/fn-echo_tool")
    assert after == FunctionInfo(
        "fn-echo_tool-id", "fn-echo_tool", launched.endpoint, "arn:fake:function:fn-echo_tool", "Running"
    )
    assert steps[0] == "healthz: checking" and steps[-1] == "end: done"
    sent = stand_in.launches[-1]
    assert sent["filename"] == package_filename(IDENTIFIER) == "tester@echo_tool@0.0.1@" + "c" * 64 + ".difypkg"
    assert sent["size"] == len(b"package bytes")
    assert sent["verified"] == "true"
    assert sent["metadata"] == {"plugin_unique_identifier": IDENTIFIER}


def test_our_client_reports_a_go_style_failed_stage(go_connector: tuple[GoStyleConnector, AppServer]) -> None:
    stand_in, server = go_connector
    broken = "tester/broken:0.0.2@" + "d" * 64
    stand_in.fail_build.add(package_filename(broken))

    async def work(client: ConnectorClient) -> FunctionInfo:
        return await client.launch(broken, b"x", verified=False, progress=lambda step: None)

    with pytest.raises(ConnectorError, match="failed at stage build: pip install failed"):
        anyio.run(_with_client, server.url, GO_KEY, work)


@pytest.fixture(scope="module")
def connector(home: Path) -> Iterator[ConnectorServer]:
    # no signing secret: the Go daemon signs nothing
    with running_connector(home / "go-compat-connector", daemon_url="http://127.0.0.1:9") as running:
        yield running


@pytest.fixture
def go_client(connector: ConnectorServer) -> Iterator[GoSRIClient]:
    client = GoSRIClient(connector.url, CONNECTOR_KEY)
    try:
        yield client
    finally:
        client.close()


def test_go_client_pings_and_looks_up_our_connector(connector: ConnectorServer, go_client: GoSRIClient) -> None:
    go_client.ping()
    assert go_client.fetch_function("tester@nothing@0.0.1@" + "a" * 64 + ".difypkg") is None
    raw = connector.client.get(
        "/v1/runner/instances", params={"filename": "tester@nothing@0.0.1@" + "a" * 64 + ".difypkg"}
    )
    assert set(raw.json()) == {"error", "Items"}  # the names of Go's RunnerInstances fields


def test_go_client_sees_a_refused_launch_as_an_error_event(go_client: GoSRIClient) -> None:
    filename = "tester@x@0.0.1@" + "b" * 64 + ".difypkg"
    events = go_client.setup_function(filename, b"not a zip", "tester/x:0.0.1@" + "b" * 64, verified=False)
    assert [event.event for event in events] == ["error"]
    assert "invalid package" in events[0].message


@pytest.mark.slow
def test_go_client_launches_and_invokes_a_function_of_our_connector(
    connector: ConnectorServer, go_client: GoSRIClient
) -> None:
    data = build_package(PLUGINS / "echo_tool")
    identifier = str(decode_package(data).identifier)
    filename = package_filename(identifier)
    events = go_client.setup_function(filename, data, identifier, verified=False)
    kinds = [event.event for event in events]
    assert "error" not in kinds, events
    assert kinds[-3:] == ["function", "function_url", "done"], kinds
    name, url = events[-3].message, events[-2].message
    assert url == f"{connector.url}/functions/{name}"
    found = go_client.fetch_function(filename)
    assert found == {"function_name": name, "function_drn": f"local:function:{name}", "function_url": url}

    result = go_client.invoke(
        url, "go-session-1", "invoke_tool", tool_request("go-session-1", "echo_tool", "echo", {"text": "from go"})
    )
    assert result.errors == []
    assert [message["type"] for message in result.messages] == ["stream", "end"]
    assert result.messages[0]["data"]["message"] == {"text": "from go"}
    assert json.dumps(result.messages[0])  # plain JSON, as Go unmarshals it
