"""The public webhook ``/e/{hook_id}/...`` over real HTTP, without an API key.

The in-memory plugin of :mod:`tests.core.endpoints.hooks` echoes the raw request it received, so
these tests see exactly what a plugin would parse.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_daemon.endpoints import MAX_ENDPOINT_BODY

from tests.core.endpoints.hooks import (
    INNER_KEY,
    hooks_daemon,
    installed,
    one_endpoint,
    release,
    settings_for,
    write_plugin,
)
from tests.core.test_management_api import TENANT, envelope
from tests.support.daemon_server import DaemonServer
from tests.support.dify_inner_api import DifyInnerAPI
from tests.support.waiting import wait_for

SETTINGS = {"api_key": "s3cret-value", "greeting": "hi"}


@dataclass
class Hook:
    server: DaemonServer
    api: DifyInnerAPI
    public: httpx.Client  # no X-Api-Key
    endpoint: dict[str, Any]

    @property
    def url(self) -> str:
        return f"/e/{self.endpoint['hook_id']}"


@pytest.fixture
def hook(make_settings, tmp_path: Path) -> Iterator[Hook]:  # type: ignore[no-untyped-def]
    with DifyInnerAPI(key=INNER_KEY) as api, hooks_daemon(settings_for(make_settings, api)) as server:
        identifier = installed(server.client, write_plugin(tmp_path / "hooks"))
        endpoint = one_endpoint(server.client, identifier, SETTINGS)
        with httpx.Client(base_url=server.url, timeout=30) as public:
            yield Hook(server, api, public, endpoint)


def headers_of(seen: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return found


def test_get_reaches_the_plugin_as_raw_http(hook: Hook) -> None:
    response = hook.public.get(
        f"{hook.url}/echo?x=1&y=two%20words",
        headers={
            "X-Forwarded-For": "10.1.2.3",
            "X-Real-IP": "10.1.2.3",
            "X-Forwarded": "for=10.1.2.3",
            "X-Original-Host": "hooks.example.com",
            "X-Original-Url": "/secret/path",
            "X-Custom": "kept",
            "Dify-Hook-Id": "forged",
        },
    )
    assert response.status_code == 201
    assert response.headers["x-plugin"] == "hooks"
    assert response.headers["content-type"] == "application/json"
    seen = response.json()
    assert (seen["method"], seen["target"], seen["version"]) == ("GET", "/echo?x=1&y=two%20words", "HTTP/1.1")
    headers = headers_of(seen)
    assert headers["host"] == ["hooks.example.com"]
    assert headers["x-custom"] == ["kept"]
    assert headers["dify-hook-id"] == [hook.endpoint["hook_id"]]
    assert headers["dify-hook-url"] == [f"http://hooks.example.com/e/{hook.endpoint['hook_id']}/echo"]
    assert not [name for name in headers if name in ("x-forwarded-for", "x-real-ip", "x-forwarded")]
    assert not [name for name in headers if name.startswith("x-original-")]
    assert "content-length" not in headers and seen["body"] == ""
    assert seen["settings"] == SETTINGS  # decrypted for the plugin

    decrypt = hook.api.calls("invoke/encrypt")[-1].json
    assert (decrypt["opt"], decrypt["identity"], decrypt["user_id"]) == ("decrypt", hook.endpoint["id"], "")
    assert decrypt["data"]["api_key"] == "enc:s3cret-value"


def test_the_hook_url_is_https_behind_a_tls_proxy(hook: Hook) -> None:
    proxied = {"X-Original-Host": "hooks.example.com", "X-Forwarded-Proto": "https"}
    headers = headers_of(hook.public.get(f"{hook.url}/echo", headers=proxied).json())
    assert headers["dify-hook-url"] == [f"https://hooks.example.com/e/{hook.endpoint['hook_id']}/echo"]


def test_post_body_reaches_the_plugin(hook: Hook) -> None:
    body = bytes(range(256)) * 64
    response = hook.public.post(
        f"{hook.url}/echo/deeper?z=1", content=body, headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 201
    seen = response.json()
    assert (seen["method"], seen["target"]) == ("POST", "/echo/deeper?z=1")
    headers = headers_of(seen)
    assert headers["content-length"] == [str(len(body))]
    assert headers["content-type"] == ["application/octet-stream"]
    host = hook.server.url.removeprefix("http://")
    assert headers["host"] == [host]
    assert headers["dify-hook-url"] == [f"http://{host}/e/{hook.endpoint['hook_id']}/echo/deeper"]
    assert bytes.fromhex(seen["body"]) == body


def test_every_method_and_the_bare_hook_url(hook: Hook) -> None:
    for method in ("PUT", "PATCH", "DELETE", "OPTIONS"):
        response = hook.public.request(method, f"{hook.url}/echo", content=b"x" if method != "OPTIONS" else b"")
        assert response.status_code == 201, method
        assert response.json()["method"] == method
    head = hook.public.head(f"{hook.url}/echo")
    assert (head.status_code, head.content) == (201, b"")
    assert hook.public.get(hook.url).json()["target"] == "/"


def test_the_plugin_status_headers_and_body_come_back(hook: Hook) -> None:
    response = hook.public.get(f"{hook.url}/teapot")
    assert response.status_code == 418
    assert response.headers["content-type"] == "text/plain"
    assert response.content == b"short and stout"


def test_the_body_is_streamed_as_the_plugin_sends_it(hook: Hook) -> None:
    release.clear()
    try:
        with hook.public.stream("GET", f"{hook.url}/stream") as response:
            assert response.status_code == 200
            chunks = response.iter_raw()
            assert next(chunks) == b"first;"  # the plugin is still holding its second chunk
            release.set()
            assert b"".join(chunks) == b"second"
    finally:
        release.set()


def test_unknown_and_disabled_hooks_are_404(hook: Hook) -> None:
    unknown = hook.public.get("/e/0123456789abcdef0123456789abcdef/echo")
    assert unknown.status_code == 404
    assert json.loads(unknown.json()["message"])["message"] == "endpoint not found"

    client = hook.server.client
    assert envelope(client.post(f"/plugin/{TENANT}/endpoint/disable", json={"endpoint_id": hook.endpoint["id"]}))
    assert hook.public.get(f"{hook.url}/echo").status_code == 404
    assert envelope(client.post(f"/plugin/{TENANT}/endpoint/enable", json={"endpoint_id": hook.endpoint["id"]}))
    assert hook.public.get(f"{hook.url}/echo").status_code == 201


def test_oversize_body_is_413(hook: Hook) -> None:
    calls_before = len(hook.api.calls("invoke/encrypt"))
    declared = hook.public.post(f"{hook.url}/echo", content=b"x" * (MAX_ENDPOINT_BODY + 1))
    assert declared.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is met while reading
        for _ in range(11):
            yield b"y" * (1024 * 1024)

    streamed = hook.public.post(f"{hook.url}/echo", content=chunked())
    assert streamed.status_code == 413
    assert "larger than the endpoint limit" in json.loads(streamed.json()["message"])["message"]
    assert len(hook.api.calls("invoke/encrypt")) == calls_before  # the plugin was never asked
    assert hook.public.post(f"{hook.url}/echo", content=b"z" * MAX_ENDPOINT_BODY).status_code == 201


def test_plugin_error_is_a_500_with_its_message(hook: Hook) -> None:
    response = hook.public.get(f"{hook.url}/fail")
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == -500 and body["data"] is None
    outer = json.loads(body["message"])
    assert outer["error_type"] == "PluginInvokeError"
    assert json.loads(outer["message"]) == {"args": {}, "error_type": "RuntimeError", "message": "webhook exploded"}
    wait_for(lambda: len(hook.server.daemon.sessions) == 0, 10, "the endpoint session to end")


def test_plugin_failing_mid_answer_cuts_the_connection(hook: Hook) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        hook.public.get(f"{hook.url}/broken")
    wait_for(lambda: len(hook.server.daemon.sessions) == 0, 10, "the endpoint session to end")


def test_execution_timeout(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with (
        DifyInnerAPI(key=INNER_KEY) as api,
        hooks_daemon(settings_for(make_settings, api, PLUGIN_MAX_EXECUTION_TIMEOUT=1)) as server,
    ):
        identifier = installed(server.client, write_plugin(tmp_path / "hooks"))
        endpoint = one_endpoint(server.client, identifier, SETTINGS)
        with httpx.Client(base_url=server.url, timeout=30) as public:
            response = public.get(f"/e/{endpoint['hook_id']}/silent")
        assert response.status_code == 500
        assert json.loads(response.json()["message"])["message"] == "killed by timeout"


def test_endpoints_can_be_switched_off(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with (
        DifyInnerAPI(key=INNER_KEY) as api,
        hooks_daemon(settings_for(make_settings, api, PLUGIN_ENDPOINT_ENABLED=False)) as server,
    ):
        identifier = installed(server.client, write_plugin(tmp_path / "hooks"))
        endpoint = one_endpoint(server.client, identifier, SETTINGS)
        with httpx.Client(base_url=server.url, timeout=30) as public:
            response = public.get(f"/e/{endpoint['hook_id']}/echo")
        assert response.status_code == 404
        assert response.json()["code"] == -404 and response.json()["data"] is None
        assert "route not found: GET /e/" in response.json()["message"]
