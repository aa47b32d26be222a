"""contrib/pytest-plugin-daemon, as a plugin author uses it: a test file run by pytest in a subprocess.

The inner session installs tests/plugins/echo_tool (and broken_start) through a real daemon with the
local runtime, in the working path the local runtime tests share, so no environment is rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from pytest_plugin_daemon.client import read_answer
from pytest_plugin_daemon.errors import PluginCallError
from pytest_plugin_daemon.settings import CACHE_ENV, cache_path

from tests.runtimes.local.local_runtime_support import PLUGINS, SHARED_WORK

pytest_plugins = ["pytester"]

#: seconds the inner session may take: it may build echo_tool's environment from scratch
INNER_RUN_DEADLINE = 800

AUTHOR_TESTS = """
import pytest
from pytest_plugin_daemon import PluginCallError, PluginInstallError

ECHO_TOOL = {echo_tool!r}
BROKEN_START = {broken_start!r}


def test_echo_and_credentials(dify_plugin):
    plugin = dify_plugin(ECHO_TOOL)
    assert plugin.plugin_id == "tester/echo_tool"
    messages = plugin.invoke_tool("echo_tool", "echo", {{"text": "hi"}})
    assert messages == [{{"type": "text", "message": {{"text": "hi"}}, "meta": None}}]
    assert plugin.validate_tool_credentials("echo_tool", {{"api_key": "good"}}) is True
    with pytest.raises(PluginCallError) as refused:
        plugin.validate_tool_credentials("echo_tool", {{"api_key": "bad"}})
    assert refused.value.error_type == "PluginInvokeError"
    assert refused.value.plugin_error_type == "ToolProviderCredentialValidationError"
    with pytest.raises(PluginCallError, match="no_such_tool"):
        plugin.invoke_tool("echo_tool", "no_such_tool")


def test_storage_round_trip(dify_plugin):
    plugin = dify_plugin(ECHO_TOOL)
    assert plugin.invoke_tool("echo_tool", "storage", {{"op": "set", "key": "k", "value": "v"}})
    got = plugin.dispatch(
        "tool/invoke",
        {{"provider": "echo_tool", "tool": "storage", "tool_parameters": {{"op": "get", "key": "k"}},
          "credentials": {{}}, "credential_type": "api-key"}},
    )
    assert got[0]["message"]["json_object"] == {{"value": "v"}}
    other_workspace = dify_plugin(ECHO_TOOL)
    exists = other_workspace.invoke_tool("echo_tool", "storage", {{"op": "exist", "key": "k"}})
    assert exists[0]["message"]["json_object"] == {{"exists": False}}


def test_tool_that_raises(dify_plugin):
    dify_plugin(ECHO_TOOL).invoke_tool("echo_tool", "fail")


def test_plugin_that_cannot_start(dify_plugin):
    dify_plugin(BROKEN_START)
"""


@pytest.mark.slow
@pytest.mark.timeout(INNER_RUN_DEADLINE + 60)
def test_an_author_tests_a_plugin_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_my_plugin=AUTHOR_TESTS.format(
            echo_tool=str(PLUGINS / "echo_tool"), broken_start=str(PLUGINS / "broken_start")
        )
    )
    result = pytester.runpytest_subprocess(
        f"--dify-plugin-cache={SHARED_WORK}", "-p", "no:cacheprovider", timeout=INNER_RUN_DEADLINE
    )
    result.assert_outcomes(passed=2, failed=2)
    output = result.stdout.str()
    assert "PluginCallError: tool/invoke: the plugin raised ValueError: boom" in output
    assert "PluginInstallError: installing tester/broken_start:0.0.1@" in output
    assert "cannot start: missing config" in output


def test_unknown_daemon_setting_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ndify_daemon_settings =\n    NO_SUCH_SETTING=1\n")
    pytester.makepyfile(test_it="def test_it(dify_plugin_daemon):\n    pass\n")
    result = pytester.runpytest_subprocess(timeout=120)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown plugin-daemon setting(s): NO_SUCH_SETTING*"])


def test_cache_path_option_wins_then_environment_then_ini(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_path(str(tmp_path / "option"), str(tmp_path / "ini")) == tmp_path / "option"
    assert cache_path(None, str(tmp_path / "ini")) == tmp_path / "env"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_path(None, str(tmp_path / "ini")) == tmp_path / "ini"
    assert cache_path(None, "") == Path("~/.cache/pytest-plugin-daemon").expanduser().resolve()


def sse_answer(*events: dict[str, object]) -> httpx.Response:
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=body)


def test_an_error_event_becomes_a_plugin_call_error_with_the_items_before_it() -> None:
    plugin_error = {"args": {}, "error_type": "ValueError", "message": "boom"}
    daemon_error = {"error_type": "PluginInvokeError", "message": json.dumps(plugin_error), "args": None}
    answer = sse_answer(
        {"code": 0, "message": "success", "data": {"type": "text", "message": {"text": "before"}}},
        {"code": -500, "message": json.dumps(daemon_error), "data": None},
    )
    with pytest.raises(PluginCallError) as raised:
        read_answer("tool/invoke", answer)
    error = raised.value
    assert (error.code, error.error_type, error.plugin_error_type, error.plugin_message) == (
        -500,
        "PluginInvokeError",
        "ValueError",
        "boom",
    )
    assert error.items == [{"type": "text", "message": {"text": "before"}}]
    assert str(error) == "tool/invoke: the plugin raised ValueError: boom"


def test_a_refusal_of_the_daemon_is_a_plugin_call_error() -> None:
    refusal = {"error_type": "PluginNotFoundError", "message": "plugin not found", "args": None}
    answer = httpx.Response(200, json={"code": -404, "message": json.dumps(refusal), "data": None})
    with pytest.raises(PluginCallError, match="tool/invoke: PluginNotFoundError: plugin not found") as raised:
        read_answer("tool/invoke", answer)
    assert raised.value.plugin_error_type is None
