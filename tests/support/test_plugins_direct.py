"""The test plugins, run straight with the real SDK (no daemon): frames as sdk-transports.md describes.

Venvs are built once with uv and cached (``~/.cache/plugin-daemon-tests``, keyed by dependency files);
plugins with the same requirements share one venv.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.openai_server import OpenAIServer
from tests.support.plugin_driver import (
    PLUGINS_DIR,
    InnerAPIForwarder,
    MemoryStorage,
    PluginDriverError,
    PluginProcess,
    blobs,
    ensure_venv,
    errors,
    llm_request,
    llm_text,
    streams,
    texts,
    tool_request,
    validate_model_credentials_request,
    validate_provider_credentials_request,
    validate_tool_credentials_request,
)

pytestmark = pytest.mark.slow

ECHO = PLUGINS_DIR / "echo_tool"


@pytest.fixture(scope="session")
def python_074() -> Path:
    return ensure_venv(ECHO)


@pytest.fixture(scope="session")
def python_010() -> Path:
    return ensure_venv(PLUGINS_DIR / "echo_tool_new")


@pytest.fixture(scope="module")
def echo(python_074: Path) -> Iterator[PluginProcess]:
    with PluginProcess(ECHO, python_074).start() as plugin:
        yield plugin


@pytest.fixture(scope="module")
def openai() -> Iterator[OpenAIServer]:
    with OpenAIServer(chunks=5) as server:
        yield server


@pytest.fixture(scope="module")
def mock_llm(python_074: Path) -> Iterator[PluginProcess]:
    with PluginProcess(PLUGINS_DIR / "mock_llm", python_074).start() as plugin:
        yield plugin


# -- echo_tool (dify_plugin 0.7.4, Python 3.11) -----------------------------------------------------


def test_echo_startup(echo: PluginProcess) -> None:
    assert echo.manifest is not None
    assert echo.manifest["name"] == "echo_tool" and echo.manifest["author"] == "tester"
    assert echo.manifest["meta"]["runner"]["version"] == "3.11"
    permission = echo.manifest["resource"]["permission"]
    assert permission["storage"] == {"enabled": True, "size": 1048576}
    assert permission["model"]["llm"] is True and permission["tool"]["enabled"] is True
    assert echo.manifest["resource"]["memory"] == 268435456
    assert {"level": "INFO", "message": "Installed tool: echo_tool"}.items() <= echo.logs[0].items()
    assert echo.heartbeats >= 1


def test_echo_echo(echo: PluginProcess) -> None:
    messages = echo.invoke_tool("echo_tool", "echo", {"text": "hello world"})
    assert messages == [
        {"type": "stream", "data": {"type": "text", "message": {"text": "hello world"}, "meta": None}},
        {"type": "end", "data": {}},
    ]


def test_echo_multi(echo: PluginProcess) -> None:
    assert streams(echo.invoke_tool("echo_tool", "multi")) == [
        {"type": "text", "message": {"text": "a"}, "meta": None},
        {"type": "json", "message": {"json_object": {"k": 1}}, "meta": None},
        {"type": "variable", "message": {"variable_name": "v", "variable_value": 42, "stream": False}, "meta": None},
        {
            "type": "variable",
            "message": {"variable_name": "s", "variable_value": "chunk", "stream": True},
            "meta": None,
        },
    ]


@pytest.mark.parametrize(("size", "chunk_frames"), [(None, 2), (20000, 4)])
def test_echo_blob(echo: PluginProcess, size: int | None, chunk_frames: int) -> None:
    messages = echo.invoke_tool("echo_tool", "blob", {} if size is None else {"size": size})
    chunks = streams(messages)
    assert len(chunks) == chunk_frames  # ceil(size / 8192) chunks + an empty end chunk
    assert all(c["type"] == "blob_chunk" and c["meta"] == {"mime_type": "text/plain"} for c in chunks)
    assert chunks[-1]["message"]["end"] is True and chunks[-1]["message"]["blob"] == ""
    expected = (b"0123456789" * 2000)[: size or 5]
    assert list(blobs(messages).values()) == [expected]


def test_echo_fail(echo: PluginProcess) -> None:
    messages = echo.invoke_tool("echo_tool", "fail")
    assert [m["type"] for m in messages] == ["stream", "error", "end"]
    assert texts(messages) == "before"
    assert errors(messages) == [{"error_type": "ValueError", "message": "boom", "args": {}}]


def test_echo_unknown_tool(echo: PluginProcess) -> None:
    assert (
        errors(echo.invoke_tool("echo_tool", "nope"))[0]["message"] == "Tool `nope` not found for provider `echo_tool`"
    )


def test_echo_validate_credentials(echo: PluginProcess) -> None:
    ok = echo.request(validate_tool_credentials_request("echo_tool", {"api_key": "good"}))
    assert streams(ok) == [{"result": True}]
    bad = echo.request(validate_tool_credentials_request("echo_tool", {"api_key": "bad"}))
    assert errors(bad)[0]["error_type"] == "ToolProviderCredentialValidationError"


def test_echo_storage(echo: PluginProcess) -> None:
    storage = MemoryStorage()

    def run(**params: str) -> list[dict]:
        return echo.invoke_tool("echo_tool", "storage", params, on_invoke=storage)

    assert streams(run(op="set", key="k", value="v1"))[-1]["message"]["json_object"] == {"ok": True}
    assert storage.data == {"k": "7631"}  # hex, as the SDK sends it
    assert streams(run(op="get", key="k"))[-1]["message"]["json_object"] == {"value": "v1"}
    assert streams(run(op="exist", key="k"))[-1]["message"]["json_object"] == {"exists": True}
    assert streams(run(op="delete", key="k"))[-1]["message"]["json_object"] == {"ok": True}
    assert streams(run(op="exist", key="k"))[-1]["message"]["json_object"] == {"exists": False}
    missing = run(op="get", key="k")
    assert errors(missing)[0]["error_type"] == "Exception"
    assert "load data failed" in errors(missing)[0]["message"]
    assert [c["request"]["opt"] for c in storage.calls] == ["set", "get", "exist", "del", "exist", "get"]


def test_echo_llm_and_call_tool_through_inner_api(echo: PluginProcess) -> None:
    with DifyInnerAPI(key="k") as api:
        forward = InnerAPIForwarder(api.url, "k", tenant_id="t-1")
        params = {"provider": "langgenius/openai/openai", "model": "gpt-x", "query": "hi"}
        messages = echo.invoke_tool("echo_tool", "llm", params, on_invoke=forward)
        assert texts(messages) == api.expected_llm_text()
        assert messages[0]["type"] == "invoke" and messages[0]["data"]["type"] == "llm"
        body = api.calls("invoke/llm")[0].json
        assert body["tenant_id"] == "t-1" and body["model"] == "gpt-x" and body["stream"] is True
        assert body["prompt_messages"][0]["content"] == "hi"

        params = {"provider": "time", "tool_name": "current_time", "parameters": '{"tz": "UTC"}'}
        messages = echo.invoke_tool("echo_tool", "call_tool", params, on_invoke=forward)
        assert texts(messages) == "tool says hi"
        body = api.calls("invoke/tool")[0].json
        assert (body["tool_type"], body["provider"], body["tool"]) == ("builtin", "time", "current_time")
        assert body["tool_parameters"] == {"tz": "UTC"}

        api.behave("invoke/llm", status=500)
        failed = echo.invoke_tool("echo_tool", "llm", params | {"query": "x"}, on_invoke=forward)
        assert "status code: 500" in errors(failed)[0]["message"]


def test_echo_pid_env_and_concurrency(echo: PluginProcess) -> None:
    pid = streams(echo.invoke_tool("echo_tool", "pid"))[0]["message"]["json_object"]
    assert pid == {"pid": echo.pid, "ppid": os.getpid()}
    environ = streams(echo.invoke_tool("echo_tool", "env"))[0]["message"]["json_object"]["environ"]
    assert environ["INSTALL_METHOD"] == "local"

    # many sessions multiplexed over one process: 20 sleeps of 0.5 s finish together
    started = time.monotonic()
    sessions = [echo.open_session(tool_request("echo_tool", "sleep", {"seconds": 0.5})) for _ in range(20)]
    results = [texts(s.collect(timeout=30)) for s in sessions]
    assert results == ["slept"] * 20
    assert time.monotonic() - started < 5


def test_echo_huge_and_hog(echo: PluginProcess) -> None:
    assert len(texts(echo.invoke_tool("echo_tool", "huge", {"size": 3_000_000}))) == 3_000_000
    assert texts(echo.invoke_tool("echo_tool", "hog", {"mb": 32, "seconds": 0.1})) == "done"


def test_echo_crash(python_074: Path) -> None:
    with PluginProcess(ECHO, python_074).start() as plugin:
        session = plugin.open_session(tool_request("echo_tool", "crash"))
        seen = []
        with pytest.raises(PluginDriverError, match="plugin exited"):
            for message in session.messages(timeout=30):
                seen.append(message)
        assert texts(seen) == "dying"
        assert plugin.wait_exit(10) == 3


def test_env_is_allow_listed(python_074: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUGIN_DAEMON_TEST_SECRET", "s3cr3t")
    plugin = PluginProcess(ECHO, python_074)
    assert "PLUGIN_DAEMON_TEST_SECRET" not in plugin.env
    assert plugin.env["INSTALL_METHOD"] == "local"


# -- other plugins ----------------------------------------------------------------------------------


def test_echo_tool_new_on_sdk_010(python_010: Path) -> None:
    with PluginProcess(PLUGINS_DIR / "echo_tool_new", python_010).start() as plugin:
        assert plugin.manifest is not None and plugin.manifest["meta"]["runner"]["version"] == "3.12"
        assert texts(plugin.invoke_tool("echo_tool_new", "echo", {"text": "new"})) == "new"
        assert list(blobs(plugin.invoke_tool("echo_tool_new", "blob")).values()) == [b"01234"]
        bad = errors(plugin.request(validate_tool_credentials_request("echo_tool_new", {"api_key": "bad"})))
        assert bad[0]["error_type"] == "ToolProviderCredentialValidationError"
        assert "Traceback" in bad[0]["args"]["traceback"]  # 0.10.x adds it


def test_noperm_tool(python_074: Path) -> None:
    with PluginProcess(PLUGINS_DIR / "noperm_tool", python_074).start() as plugin:
        assert plugin.manifest is not None and plugin.manifest["resource"]["permission"] is None
        assert texts(plugin.invoke_tool("noperm_tool", "echo", {"text": "x"})) == "x"
        # the driver grants what the daemon must refuse: the tools really do call storage and llm
        messages = plugin.invoke_tool("noperm_tool", "storage", {"op": "exist", "key": "k"}, on_invoke=MemoryStorage())
        assert messages[0]["type"] == "invoke" and messages[0]["data"]["type"] == "storage"
        messages = plugin.invoke_tool("noperm_tool", "llm", {"provider": "p", "model": "m", "query": "q"})
        assert messages[0]["data"]["type"] == "llm"
        assert "no backwards-invocation handler" in errors(messages)[0]["message"]


def test_broken_start(python_074: Path) -> None:
    plugin = PluginProcess(PLUGINS_DIR / "broken_start", python_074)
    with pytest.raises(PluginDriverError, match="cannot start: missing config"):
        plugin.start(timeout=60)
    assert plugin.returncode == 1


# -- mock_llm -----------------------------------------------------------------------------------------


def test_mock_llm_stream(mock_llm: PluginProcess, openai: OpenAIServer) -> None:
    credentials = {"endpoint_url": openai.url}
    messages = mock_llm.request(llm_request("mock_llm", "mock-model", credentials, "hello there"))
    chunks = streams(messages)
    assert len(chunks) == 6  # 5 upstream content chunks + the finish/usage chunk
    assert llm_text(messages) == openai.expected_content(chunks=5)
    assert [c["delta"]["index"] for c in chunks] == list(range(6))
    assert all(c["delta"]["usage"] is None for c in chunks[:-1])
    last = chunks[-1]["delta"]
    assert last["finish_reason"] == "stop"
    assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (2, 5)
    request = openai.wait_for_requests(
        1, predicate=lambda r: r.json and r.json.get("messages") == [{"role": "user", "content": "hello there"}]
    )[-1]
    assert request.json["stream"] is True and request.json["model"] == "mock-model"


def test_mock_llm_streams_at_upstream_pace(mock_llm: PluginProcess, openai: OpenAIServer) -> None:
    credentials = {"endpoint_url": openai.url}
    session = mock_llm.open_session(llm_request("mock_llm", "mock-model?chunks=4&delay=0.25", credentials))
    arrivals = [time.monotonic() for m in session.messages(timeout=30) if m["type"] == "stream"]
    assert len(arrivals) == 5
    assert arrivals[3] - arrivals[0] >= 0.6  # not buffered until the end


def test_mock_llm_blocking_and_tokens(mock_llm: PluginProcess, openai: OpenAIServer) -> None:
    credentials = {"endpoint_url": openai.url}
    messages = mock_llm.request(llm_request("mock_llm", "custom?chunks=3", credentials, stream=False))
    assert llm_text(messages) == openai.expected_content(chunks=3)
    tokens = mock_llm.request(
        {
            "type": "model",
            "action": "get_llm_num_tokens",
            "user_id": "u",
            "provider": "mock_llm",
            "model_type": "llm",
            "model": "mock-model",
            "credentials": credentials,
            "prompt_messages": [{"role": "user", "content": "one two three"}],
            "tools": [],
        }
    )
    assert streams(tokens) == [{"num_tokens": 3}]


def test_mock_llm_credentials(mock_llm: PluginProcess, openai: OpenAIServer) -> None:
    good = {"endpoint_url": openai.url}
    assert streams(mock_llm.request(validate_provider_credentials_request("mock_llm", good)))[0]["result"] is True
    assert streams(mock_llm.request(validate_model_credentials_request("mock_llm", "any", good)))[0]["result"]
    with OpenAIServer() as closed:
        dead_url = closed.url
    bad = errors(mock_llm.request(validate_provider_credentials_request("mock_llm", {"endpoint_url": dead_url})))
    assert bad[0]["error_type"] == "CredentialsValidateFailedError"


def test_mock_llm_upstream_failure(mock_llm: PluginProcess) -> None:
    with OpenAIServer() as server:
        server.configure(status=503)
        failed = errors(mock_llm.request(llm_request("mock_llm", "mock-model", {"endpoint_url": server.url})))
        assert failed[0]["error_type"] == "InvokeServerUnavailableError"
        assert "503" in failed[0]["args"]["description"]
