"""A small endpoint plugin for the endpoint tests: its package, and its in-memory implementation.

The package (built from a folder written in tmp_path) declares an endpoint group whose settings
are ``api_key`` (secret-input unless asked otherwise, required) and ``greeting`` (text-input). The
in-memory runtime ``hooks`` answers endpoint sessions by parsing the raw HTTP request it is given:

- ``/echo`` (default): 201, ``X-Plugin: hooks``, a JSON body (sent in two chunks) describing the
  request exactly as the plugin saw it, plus the settings it got;
- ``/teapot``: 418 with a plain-text body, status, headers and body in one item;
- ``/stream``: a first chunk, then waits for :data:`release` before the second;
- ``/fail``: raises before answering; ``/broken``: raises after the first body chunk;
- ``/silent``: answers nothing for 30 s (to meet the execution timeout).
"""

from __future__ import annotations

import json
import threading
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import yaml
from plugin_daemon.config import Settings
from plugin_daemon.hookspecs import hookimpl
from plugin_daemon.packages import build_package
from plugin_daemon.plugins import ExtensionManager, load_extensions
from plugin_daemon.runtime_memory import MemoryRuntime

from tests.core.test_management_api import TENANT, envelope, install, upload
from tests.support.daemon_server import DaemonServer, running_daemon
from tests.support.dify_inner_api import DifyInnerAPI

ICON = b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>'
INNER_KEY = "inner-key"
#: set by a test to let ``/stream`` send its second chunk
release = threading.Event()


def write_plugin(folder: Path, *, name: str = "hooks", endpoint_permission: bool = True, secret: bool = True) -> bytes:
    """Write the plugin folder and build its package."""
    permission: dict[str, Any] = {"endpoint": {"enabled": True}} if endpoint_permission else {}
    manifest = {
        "version": "0.0.1",
        "type": "plugin",
        "author": "tester",
        "name": name,
        "label": {"en_US": "Hooks"},
        "description": {"en_US": "Endpoint test plugin."},
        "icon": "icon.svg",
        "created_at": "2024-07-12T08:03:44Z",
        "resource": {"memory": 268435456, "permission": permission},
        "plugins": {"endpoints": ["group/hooks.yaml"]},
        "meta": {
            "version": "0.0.1",
            "arch": ["amd64", "arm64"],
            "runner": {"language": "python", "version": "3.11", "entrypoint": "main"},
        },
    }
    group = {
        "settings": [
            {
                "name": "api_key",
                "type": "secret-input" if secret else "text-input",
                "required": True,
                "label": {"en_US": "API key"},
            },
            {"name": "greeting", "type": "text-input", "required": False, "label": {"en_US": "Greeting"}},
        ],
        "endpoints": ["endpoints/echo.yaml"],
    }
    endpoint = {"path": "/echo", "method": "POST", "extra": {"python": {"source": "endpoints/echo.py"}}}
    files: dict[str, bytes] = {
        "manifest.yaml": yaml.safe_dump(manifest).encode(),
        "group/hooks.yaml": yaml.safe_dump(group).encode(),
        "endpoints/echo.yaml": yaml.safe_dump(endpoint).encode(),
        "endpoints/echo.py": b"# answered by the in-memory runtime of the tests\n",
        "main.py": b"",
        "_assets/icon.svg": ICON,
    }
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return build_package(folder)


def parse_raw_request(raw: bytes) -> dict[str, Any]:
    """An HTTP/1.1 request as a plugin parses it: request line, headers, body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, version = request_line.split(" ")
    headers = [line.split(": ", 1) for line in header_lines]
    return {"method": method, "target": target, "version": version, "headers": headers, "body": body.hex()}


async def hooks_plugin(data: dict[str, Any]) -> AsyncIterator[Any]:
    request = parse_raw_request(bytes.fromhex(data["raw_http_request"]))
    path = request["target"].split("?")[0]
    if path == "/fail":
        raise RuntimeError("webhook exploded")
    if path == "/teapot":
        yield {"status": 418, "headers": {"Content-Type": "text/plain"}, "result": b"short and stout".hex()}
        return
    if path == "/stream":
        yield {"status": 200, "headers": {"Content-Type": "text/plain"}}
        yield {"result": b"first;".hex()}
        await anyio.to_thread.run_sync(release.wait, 20)
        yield {"result": b"second".hex()}
        return
    if path == "/silent":
        await anyio.sleep(30)
    if path == "/broken":
        yield {"status": 200, "headers": {"Content-Type": "text/plain"}}
        yield {"result": b"partial".hex()}
        raise RuntimeError("died mid-answer")
    body = json.dumps({**request, "settings": data["settings"]}).encode()
    yield {"status": 201, "headers": {"Content-Type": "application/json", "X-Plugin": "hooks"}}
    yield {"result": body[:10].hex()}
    yield {"result": body[10:].hex()}


def hooks_extensions() -> ExtensionManager:
    module = types.ModuleType("hooks_runtime")

    @hookimpl
    def plugin_daemon_register_runtimes(register):  # type: ignore[no-untyped-def]
        register("hooks", lambda daemon: MemoryRuntime({("endpoint", "invoke_endpoint"): hooks_plugin}))

    module.plugin_daemon_register_runtimes = plugin_daemon_register_runtimes  # type: ignore[attr-defined]
    manager = load_extensions()
    manager.register(module, "hooks_runtime")
    return manager


@contextmanager
def hooks_daemon(settings: Settings) -> Iterator[DaemonServer]:
    with running_daemon(settings, hooks_extensions()) as server:
        yield server


def settings_for(make_settings: Any, inner_api: DifyInnerAPI, **overrides: Any) -> Settings:
    return make_settings(PLATFORM="hooks", DIFY_INNER_API_URL=inner_api.url, DIFY_INNER_API_KEY=INNER_KEY, **overrides)


def installed(client: httpx.Client, package: bytes) -> str:
    identifier = envelope(upload(client, package))["unique_identifier"]
    assert install(client, identifier)["status"] == "success"
    return identifier


def setup(client: httpx.Client, identifier: str, settings: dict[str, Any], name: str = "my hook") -> httpx.Response:
    return client.post(
        f"/plugin/{TENANT}/endpoint/setup",
        json={"plugin_unique_identifier": identifier, "user_id": "u1", "settings": settings, "name": name},
    )


def endpoints(client: httpx.Client, plugin_id: str | None = None) -> list[dict[str, Any]]:
    if plugin_id is None:
        response = client.get(f"/plugin/{TENANT}/endpoint/list", params={"page": 1, "page_size": 100})
    else:
        response = client.get(
            f"/plugin/{TENANT}/endpoint/list/plugin", params={"plugin_id": plugin_id, "page": 1, "page_size": 100}
        )
    return envelope(response)


def one_endpoint(client: httpx.Client, identifier: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Install nothing; set up one endpoint of ``identifier`` and return its listed entity."""
    assert envelope(setup(client, identifier, settings)) is True
    (entity,) = endpoints(client)
    return entity
