"""The management API over real HTTP: upload, install, list, dispatch, uninstall, bad input.

Plugins run in the in-memory runtime that the test extension registers through the entry-point
group (``memory``), so these tests are about the core, on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from plugin_daemon.packages import build_package

from tests.conftest import TEST_KEY
from tests.support.daemon_server import running_daemon
from tests.support.waiting import wait_for

ECHO_TOOL = Path(__file__).parents[1] / "plugins" / "echo_tool"
TENANT = "0191f1a2-0000-7000-8000-00000000a001"  # Dify tenant ids are UUIDs (uuid columns on PostgreSQL)
TASK_DEADLINE = 30.0


@pytest.fixture(scope="module")
def echo_package() -> bytes:
    return build_package(ECHO_TOOL)


def independent_checksum(package: bytes) -> str:
    """§6 of the protocol reference, written again here on purpose."""
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        names = sorted(info.filename for info in archive.infolist() if not info.is_dir())
        digest = hashlib.sha256()
        for name in names:
            digest.update(hashlib.sha256(name.encode()).digest())
            digest.update(hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def envelope(response: httpx.Response) -> Any:
    body = response.json()
    assert body["code"] == 0, body
    assert body["message"] == "success"
    return body["data"]


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["code"] != 0, body
    assert body["data"] is None
    return json.loads(body["message"])


def upload(client: httpx.Client, package: bytes, tenant: str = TENANT) -> httpx.Response:
    return client.post(
        f"/plugin/{tenant}/management/install/upload/package",
        files={"dify_pkg": ("dify_pkg", package, "application/octet-stream")},
        data={"verify_signature": "false"},
    )


def wait_task(
    client: httpx.Client, task_id: str, tenant: str = TENANT, timeout: float = TASK_DEADLINE
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        task = envelope(client.get(f"/plugin/{tenant}/management/install/tasks/{task_id}"))
        return task if task["status"] in ("success", "failed") else None

    return wait_for(finished, timeout, f"install task {task_id}")


def install(client: httpx.Client, identifier: str, tenant: str = TENANT) -> dict[str, Any]:
    started = envelope(
        client.post(
            f"/plugin/{tenant}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        )
    )
    return wait_task(client, started["task_id"], tenant)


def sse_items(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [json.loads(line[len("data: ") :]) for line in lines]


def test_full_lifecycle(make_settings, database_url, echo_package) -> None:
    settings = make_settings(DATABASE_URL=database_url, PLATFORM="memory")
    with running_daemon(settings) as server:
        client = server.client
        decoded = envelope(upload(client, echo_package))
        identifier = decoded["unique_identifier"]
        assert identifier.startswith("tester/echo_tool:0.0.1@")
        assert identifier.endswith("@" + independent_checksum(echo_package))
        manifest = decoded["manifest"]
        assert manifest["category"] == "tool"
        assert [tool["identity"]["name"] for tool in manifest["tool"]["tools"]][:2] == ["echo", "multi"]

        task = install(client, identifier)
        assert task["status"] == "success", task
        assert task["plugins"][0]["status"] == "success"
        assert task["completed_plugins"] == task["total_plugins"] == 1

        listing = envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 256}))
        assert listing["total"] == 1
        entry = listing["list"][0]
        assert entry["plugin_id"] == "tester/echo_tool"
        assert entry["runtime_type"] == "memory"
        assert entry["declaration"]["tool"]["identity"]["name"] == "echo_tool"
        assert entry["checksum"] == identifier.split("@")[1]

        tools = envelope(client.get(f"/plugin/{TENANT}/management/tools", params={"page": 1, "page_size": 100}))
        assert [(t["plugin_id"], t["provider"]) for t in tools] == [("tester/echo_tool", "echo_tool")]
        assert tools[0]["declaration"]["identity"]["name"] == "echo_tool"
        tool = envelope(
            client.get(
                f"/plugin/{TENANT}/management/tool", params={"plugin_id": "tester/echo_tool", "provider": "echo_tool"}
            )
        )
        assert (tool["plugin_id"], tool["provider"]) == ("tester/echo_tool", "echo_tool")
        assert tool["declaration"]["identity"]["name"] == "echo_tool"
        no_tool = client.get(
            f"/plugin/{TENANT}/management/tool", params={"plugin_id": "tester/echo_tool", "provider": "x"}
        )
        assert error_of(no_tool)["error_type"] == "PluginNotFoundError"
        assert envelope(client.get(f"/plugin/{TENANT}/management/models", params={"page": 1, "page_size": 10})) == []
        exists = envelope(
            client.post(
                f"/plugin/{TENANT}/management/tools/check_existence",
                json={
                    "provider_ids": [
                        {"plugin_id": "tester/echo_tool", "provider_name": "echo_tool"},
                        {"plugin_id": "tester/echo_tool", "provider_name": "nope"},
                    ]
                },
            )
        )
        assert exists == [True, False]
        batch = envelope(
            client.post(
                f"/plugin/{TENANT}/management/installation/fetch/batch", json={"plugin_ids": ["tester/echo_tool"]}
            )
        )
        assert batch[0]["plugin_unique_identifier"] == identifier
        missing = envelope(
            client.post(
                f"/plugin/{TENANT}/management/installation/missing",
                json={"plugin_unique_identifiers": [identifier, "tester/other:0.0.1@" + "a" * 64]},
            )
        )
        assert missing == [{"plugin_unique_identifier": "tester/other:0.0.1@" + "a" * 64, "current_identifier": None}]
        fetched = envelope(
            client.get(f"/plugin/{TENANT}/management/fetch/manifest", params={"plugin_unique_identifier": identifier})
        )
        assert fetched["name"] == "echo_tool"
        # Go's answers, as Dify's client expects them
        unknown = client.get(
            f"/plugin/{TENANT}/management/fetch/manifest",
            params={"plugin_unique_identifier": "tester/other:0.0.1@" + "a" * 64},
        )
        assert unknown.status_code == 200
        assert unknown.json()["code"] == -400
        assert error_of(unknown) == {
            "message": "plugin not found",
            "error_type": "PluginDaemonBadRequestError",
            "args": None,
        }

        icon = manifest["icon"]
        asset = client.get(f"/plugin/{TENANT}/asset/{icon}")
        assert asset.status_code == 200
        assert asset.content == (ECHO_TOOL / "_assets" / "icon.svg").read_bytes()
        no_asset = client.get(f"/plugin/{TENANT}/asset/{'0' * 64}.svg")
        assert (no_asset.status_code, no_asset.content) == (200, b"")

        answer = client.post(
            f"/plugin/{TENANT}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": "tester/echo_tool"},
            json={
                "user_id": "u1",
                "data": {"provider": "echo_tool", "tool": "echo", "tool_parameters": {"text": "hi"}},
            },
        )
        assert sse_items(answer) == [
            {"code": 0, "message": "success", "data": {"type": "text", "message": {"text": "hi"}, "meta": None}}
        ]

        no_data = client.post(
            f"/plugin/{TENANT}/dispatch/tool/invoke", headers={"X-Plugin-ID": "tester/echo_tool"}, json={"user_id": "u"}
        )
        assert no_data.status_code == 400
        assert "'data'" in error_of(no_data)["message"]
        no_tool = client.post(
            f"/plugin/{TENANT}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": "tester/echo_tool"},
            json={"user_id": "u", "data": {"provider": "echo_tool"}},
        )
        assert "data.tool" in error_of(no_tool)["message"]

        again = client.post(
            f"/plugin/{TENANT}/management/install/identifiers",
            json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
        )
        assert envelope(again) == {"all_installed": True, "task_id": ""}  # idempotent: no task, as in Go
        assert (
            envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 9}))["total"] == 1
        )

        assert (
            envelope(
                client.post(
                    f"/plugin/{TENANT}/management/uninstall", json={"plugin_installation_id": entry["installation_id"]}
                )
            )
            is True
        )
        assert (
            envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 9}))["total"] == 0
        )
        assert envelope(client.get(f"/plugin/{TENANT}/management/tools", params={"page": 1, "page_size": 9})) == []
        gone = client.post(
            f"/plugin/{TENANT}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": "tester/echo_tool"},
            json={"user_id": "u1", "data": {"provider": "echo_tool", "tool": "echo"}},
        )
        assert gone.status_code == 404
        assert error_of(gone)["error_type"] == "PluginNotFoundError"


def test_auth_health_and_unknown_routes(make_settings) -> None:
    with running_daemon(make_settings()) as server:
        anonymous = httpx.get(server.url + "/health/check")
        assert anonymous.status_code == 200
        assert anonymous.json()["status"] == "ok"
        assert "runtimes" not in anonymous.json()  # plugin ids, pids, stderr: only with the key
        assert "memory" in server.client.get("/health/check").json()["runtimes"]

        wrong = httpx.get(server.url + f"/plugin/{TENANT}/management/list", headers={"X-Api-Key": "nope"})
        assert wrong.status_code == 401
        assert wrong.json() == {
            "code": -401,
            "message": '{"message":"unauthorized","error_type":"PluginDaemonUnauthorizedError","args":null}',
            "data": None,
        }
        missing_key = httpx.post(server.url + f"/plugin/{TENANT}/dispatch/tool/invoke", json={})
        assert missing_key.status_code == 401

        unknown = server.client.get("/no/such/route")
        assert unknown.status_code == 404
        assert unknown.json() == {
            "code": -404,
            "message": '{"message":"route not found: GET /no/such/route","error_type":"PluginDaemonNotFoundError",'
            '"args":null}',
            "data": None,
        }
        wrong_method = server.client.delete(f"/plugin/{TENANT}/management/list")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["code"] == -405 and wrong_method.json()["data"] is None
        assert "method not allowed: DELETE" in wrong_method.json()["message"]


def zip_files(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_bad_input_is_refused_and_changes_nothing(make_settings, echo_package) -> None:
    settings = make_settings(PLATFORM="memory", MAX_PLUGIN_PACKAGE_SIZE=len(echo_package) * 4)
    with running_daemon(settings) as server:
        client = server.client
        m = f"/plugin/{TENANT}/management"

        not_zip = error_of(upload(client, b"this is not a zip file"))
        assert not_zip["error_type"] == "PluginDaemonBadRequestError"
        assert "zip" in not_zip["message"]

        slip = error_of(upload(client, zip_files({"manifest.yaml": b"x", "../evil.py": b"print(1)"})))
        assert "escape" in slip["message"] or ".." in slip["message"]
        absolute = error_of(upload(client, zip_files({"/etc/evil": b"x"})))
        assert "/etc/evil" in absolute["message"]

        oversize = error_of(upload(client, b"0" * (len(echo_package) * 4 + 1)))
        assert "MAX_PLUGIN_PACKAGE_SIZE" in oversize["message"] or "larger" in oversize["message"]

        with zipfile.ZipFile(io.BytesIO(echo_package)) as archive:
            files = {info.filename: archive.read(info.filename) for info in archive.infolist()}
        files["manifest.yaml"] = files["manifest.yaml"].replace(b"version: 0.0.1\n", b"version: banana\n", 1)
        bad_manifest = error_of(upload(client, zip_files(files)))
        assert "version" in bad_manifest["message"]

        no_file = client.post(f"{m}/install/upload/package", data={"verify_signature": "false"})
        assert "dify_pkg" in error_of(no_file)["message"]

        malformed = client.post(
            f"{m}/install/identifiers", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert "JSON" in error_of(malformed)["message"]
        no_field = client.post(f"{m}/install/identifiers", json={"source": "package"})
        assert "plugin_unique_identifiers" in error_of(no_field)["message"]
        bad_identifier = client.post(f"{m}/install/identifiers", json={"plugin_unique_identifiers": ["nope"]})
        assert error_of(bad_identifier)["error_type"] == "PluginUniqueIdentifierError"
        unknown = client.post(
            f"{m}/install/identifiers", json={"plugin_unique_identifiers": ["tester/ghost:0.0.1@" + "b" * 64]}
        )
        assert "not known" in error_of(unknown)["message"]

        no_plugin_header = client.post(f"/plugin/{TENANT}/dispatch/tool/invoke", json={"data": {}})
        assert no_plugin_header.status_code == 400
        assert "plugin_id" in error_of(no_plugin_header)["message"]
        not_installed = client.post(
            f"/plugin/{TENANT}/dispatch/tool/invoke",
            headers={"X-Plugin-ID": "tester/ghost"},
            json={"user_id": "u", "data": {"provider": "p", "tool": "t"}},
        )
        assert not_installed.status_code == 404
        assert error_of(not_installed)["error_type"] == "PluginNotFoundError"

        too_big = client.post(f"{m}/install/identifiers", content=b"x" * (settings.MAX_REQUEST_BODY_SIZE + 1))
        assert too_big.status_code == 413

        assert envelope(client.get(f"{m}/list", params={"page": 1, "page_size": 10}))["total"] == 0
        assert envelope(client.get(f"{m}/install/tasks", params={"page": 1, "page_size": 10})) == []
        assert list(settings.package_path.iterdir()) == []


def test_upgrade_keeps_the_installation_and_retires_the_old_version(make_settings, echo_package, tmp_path) -> None:  # type: ignore[no-untyped-def]
    newer = tmp_path / "echo_tool"
    shutil.copytree(ECHO_TOOL, newer, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = newer / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("version: 0.0.1\n", "version: 0.0.2\n", 1))
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        client = server.client
        old = envelope(upload(client, echo_package))["unique_identifier"]
        new = envelope(upload(client, build_package(newer)))["unique_identifier"]
        assert install(client, old)["status"] == "success"
        before = envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 5}))
        started = envelope(
            client.post(
                f"/plugin/{TENANT}/management/install/upgrade",
                json={
                    "original_plugin_unique_identifier": old,
                    "new_plugin_unique_identifier": new,
                    "source": "package",
                    "meta": {},
                },
            )
        )
        assert wait_task(client, started["task_id"])["status"] == "success"
        after = envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 5}))
        (was,), (now,) = before["list"], after["list"]
        assert now["plugin_unique_identifier"] == new and now["version"] == "0.0.2"
        # upgraded in place, as the Go daemon does: same installation, same creation time
        assert (now["installation_id"], now["created_at"]) == (was["installation_id"], was["created_at"])
        tools = envelope(client.get(f"/plugin/{TENANT}/management/tools", params={"page": 1, "page_size": 9}))
        assert [tool["plugin_unique_identifier"] for tool in tools] == [new]
        runtime = server.daemon.control_panel.runtime("memory")
        wait_for(lambda: runtime.state(old).value == "absent", 10, "the old version to be stopped")
        assert runtime.state(new).value == "ready"


def test_install_reports_failure_truthfully(make_settings, echo_package) -> None:
    settings = make_settings(PLATFORM="memory")
    with running_daemon(settings) as server:
        client = server.client
        identifier = envelope(upload(client, echo_package))["unique_identifier"]
        server.daemon.control_panel.runtime("memory").failing[identifier] = "no room for this plugin"
        task = install(client, identifier)
        assert task["status"] == "failed"
        assert "no room for this plugin" in task["plugins"][0]["message"]
        assert (
            envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))["total"] == 0
        )
        health = httpx.get(server.url + "/health/check").json()  # no key: what is broken, not which plugin
        assert (health["status"], health["problems"]) == ("degraded", ["1 memory plugin(s) failed for good"])


def test_runtime_comes_from_entry_points_and_can_be_blocked(make_settings, echo_package) -> None:
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        assert "memory" in server.daemon.control_panel.runtimes
        names = {e["name"]: e for e in envelope(server.client.get("/plugin/extensions"))}
        assert names["memory"]["distribution"] == "plugin-daemon-test-extension"
        assert names["memory"]["blocked"] is False

    settings = make_settings(PLATFORM="memory", DISABLED_EXTENSIONS="memory")
    with running_daemon(settings) as server:
        assert "memory" not in server.daemon.control_panel.runtimes
        names = {e["name"]: e for e in envelope(server.client.get("/plugin/extensions"))}
        assert names["memory"]["blocked"] is True
        identifier = envelope(upload(server.client, echo_package))["unique_identifier"]
        task = install(server.client, identifier)
        assert task["status"] == "failed"
        assert "runtime 'memory' is not loaded" in task["plugins"][0]["message"]


def test_server_key_rules(make_settings) -> None:
    from plugin_daemon.config import PUBLIC_DEFAULT_KEYS

    public = next(iter(PUBLIC_DEFAULT_KEYS))
    with pytest.raises(ValueError, match="publicly known"):
        make_settings(SERVER_KEY=public).ensure_server_key()
    assert make_settings(SERVER_KEY=public, ALLOW_PUBLIC_SERVER_KEY=True).ensure_server_key() is None
    settings = make_settings(SERVER_KEY="")
    generated = settings.ensure_server_key()
    assert generated and generated == settings.SERVER_KEY and generated != TEST_KEY
