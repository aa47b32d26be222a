"""Endpoint management over real HTTP: setup, list, update, enable, disable, remove, refusals.

Settings encryption goes through the Dify inner API stand-in, whose ``invoke/encrypt`` prefixes
string values with ``enc:`` (so what the daemon stores shows that it was encrypted).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from plugin_daemon.store.models import EndpointRow
from sqlalchemy import select

from tests.core.endpoints.hooks import (
    INNER_KEY,
    endpoints,
    hooks_daemon,
    installed,
    one_endpoint,
    settings_for,
    setup,
    write_plugin,
)
from tests.core.test_management_api import TENANT, envelope, error_of
from tests.support.daemon_server import DaemonServer
from tests.support.dify_inner_api import DifyInnerAPI

SECRET = "s3cret-value"
OTHER_TENANT = "0191f1a2-0000-7000-8000-00000000a002"


def stored_settings(server: DaemonServer, endpoint_id: str) -> dict[str, Any]:
    with server.daemon.database.transaction() as session:
        return session.scalars(select(EndpointRow.settings).where(EndpointRow.id == endpoint_id)).one()


def counters(client: httpx.Client) -> tuple[int, int]:
    listing = envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))
    (entry,) = listing["list"]
    return entry["endpoints_setups"], entry["endpoints_active"]


def post(client: httpx.Client, action: str, body: dict[str, Any], tenant: str = TENANT) -> httpx.Response:
    return client.post(f"/plugin/{tenant}/endpoint/{action}", json=body)


def update(client: httpx.Client, endpoint_id: str, name: str, settings: dict[str, Any]) -> None:
    body = {"endpoint_id": endpoint_id, "user_id": "u1", "name": name, "settings": settings}
    assert envelope(post(client, "update", body)) is True


def test_endpoint_lifecycle(make_settings, database_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with (
        DifyInnerAPI(key=INNER_KEY) as api,
        hooks_daemon(settings_for(make_settings, api, DATABASE_URL=database_url)) as server,
    ):
        client = server.client
        identifier = installed(client, write_plugin(tmp_path / "hooks"))
        entity = one_endpoint(client, identifier, {"api_key": SECRET, "greeting": "hi"})

        assert entity["name"] == "my hook" and entity["enabled"] is True
        assert (entity["tenant_id"], entity["plugin_id"], entity["user_id"]) == (TENANT, "tester/hooks", "u1")
        assert re.fullmatch(r"[0-9a-f]{32}", entity["hook_id"])
        assert entity["expired_at"].startswith("2050-01-01T00:00:00")
        assert all(entity[key] for key in ("id", "created_at", "updated_at"))
        assert entity["settings"] == {"api_key": "s3********ue", "greeting": "hi"}  # masked as Dify shows it
        assert [item["name"] for item in entity["declaration"]["settings"]] == ["api_key", "greeting"]
        assert entity["declaration"]["endpoints"][0]["path"] == "/echo"
        assert counters(client) == (1, 1)

        assert stored_settings(server, entity["id"])["api_key"] == f"enc:{SECRET}"
        encrypt = api.calls("invoke/encrypt")[0].json
        assert (encrypt["opt"], encrypt["namespace"], encrypt["identity"]) == ("encrypt", "endpoint", entity["id"])
        assert (encrypt["tenant_id"], encrypt["user_id"], encrypt["type"]) == (TENANT, "u1", "encrypt")
        assert encrypt["data"] == {"api_key": SECRET, "greeting": "hi"}
        assert encrypt["config"][0]["type"] == "secret-input"

        # the masked secret sent back means "unchanged"; a new value replaces it
        update(client, entity["id"], "renamed", {"api_key": entity["settings"]["api_key"], "greeting": "hello"})
        assert stored_settings(server, entity["id"])["api_key"] == f"enc:{SECRET}"
        update(client, entity["id"], "renamed", {"api_key": "n3w-secret-value"})
        assert stored_settings(server, entity["id"]) == {"api_key": "enc:n3w-secret-value"}
        assert api.calls("invoke/encrypt")[-1].json["opt"] == "clear"
        (renamed,) = endpoints(client)
        assert (renamed["name"], renamed["hook_id"]) == ("renamed", entity["hook_id"])

        # disabling twice moves the active counter once
        for _ in range(2):
            assert envelope(post(client, "disable", {"endpoint_id": entity["id"]})) is True
        assert counters(client) == (1, 0)
        assert endpoints(client)[0]["enabled"] is False
        assert envelope(post(client, "enable", {"endpoint_id": entity["id"]})) is True
        assert counters(client) == (1, 1)

        assert envelope(setup(client, identifier, {"api_key": SECRET}, name="second")) is True
        listed = endpoints(client, "tester/hooks")
        assert [item["name"] for item in listed] == ["second", "renamed"]  # newest first
        assert listed[0]["hook_id"] != listed[1]["hook_id"]
        assert counters(client) == (2, 2)
        assert endpoints(client, "tester/other") == []

        assert envelope(post(client, "remove", {"endpoint_id": entity["id"]})) is True
        assert counters(client) == (1, 1)
        # removing it again is no error: Dify takes a removal of a missing endpoint as done
        assert envelope(post(client, "remove", {"endpoint_id": entity["id"]})) is True
        assert counters(client) == (1, 1)
        assert envelope(post(client, "disable", {"endpoint_id": listed[0]["id"]})) is True
        assert envelope(post(client, "remove", {"endpoint_id": listed[0]["id"]})) is True
        assert counters(client) == (0, 0)
        assert endpoints(client) == []


def test_refusals(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DifyInnerAPI(key=INNER_KEY) as api, hooks_daemon(settings_for(make_settings, api)) as server:
        client = server.client
        identifier = installed(client, write_plugin(tmp_path / "hooks"))
        unpermitted = installed(client, write_plugin(tmp_path / "noperm", name="noperm", endpoint_permission=False))

        refused = error_of(setup(client, unpermitted, {"api_key": SECRET}))
        assert refused == {
            "error_type": "PluginPermissionDeniedError",
            "message": "permission denied, you need to enable endpoint access in plugin manifest",
            "args": None,
        }
        absent = error_of(setup(client, "tester/absent:0.0.1@" + "a" * 64, {"api_key": SECRET}))
        assert (absent["error_type"], absent["message"]) == ("PluginNotFoundError", "plugin not found")
        assert error_of(setup(client, "not an identifier", {}))["error_type"] == "PluginUniqueIdentifierError"
        assert error_of(setup(client, identifier, {"greeting": "hi"}))["message"] == (
            "failed to validate settings: missing required setting: api_key"
        )
        assert error_of(setup(client, identifier, {"api_key": 5}))["message"] == (
            "failed to validate settings: setting api_key is not a string"
        )
        assert error_of(setup(client, identifier, {"api_key": SECRET}, name=""))["error_type"] == (
            "PluginDaemonBadRequestError"
        )
        long_user = {"plugin_unique_identifier": identifier, "user_id": "u" * 65, "settings": {"api_key": SECRET}}
        too_long = error_of(client.post(f"/plugin/{TENANT}/endpoint/setup", json={**long_user, "name": "n"}))
        assert too_long["message"] == "endpoint user_id is 65 characters long, the limit is 64"  # Go's varchar(64)
        assert api.calls("invoke/encrypt") == []  # nothing was encrypted for refused setups

        entity = one_endpoint(client, identifier, {"api_key": SECRET})
        other_tenant = post(
            client, "disable", {"endpoint_id": entity["id"]}, tenant="0191f1a2-0000-7000-8000-00000000a002"
        )
        assert error_of(other_tenant)["error_type"] == "PluginDaemonNotFoundError"
        assert error_of(post(client, "enable", {"endpoint_id": "missing"}))["error_type"] == (
            "PluginDaemonNotFoundError"
        )
        too_big = client.get(f"/plugin/{TENANT}/endpoint/list", params={"page": 1, "page_size": 101})
        assert error_of(too_big)["error_type"] == "PluginDaemonBadRequestError"

        api.behave("invoke/encrypt", error="encryption is down")
        failed = error_of(setup(client, identifier, {"api_key": SECRET}))
        assert "encryption is down" in failed["message"]
        api.reset()
        assert len(endpoints(client)) == 1  # the failed setup left nothing behind

        api.behave("invoke/encrypt", status=500)
        listing = client.get(f"/plugin/{TENANT}/endpoint/list", params={"page": 1, "page_size": 10})
        unlisted = error_of(listing)
        assert unlisted["error_type"] == "PluginDaemonInternalServerError"
        assert "decrypt" in unlisted["message"] and "status code: 500" in unlisted["message"]
        api.reset()


def test_settings_without_secrets_skip_dify(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DifyInnerAPI(key=INNER_KEY) as api, hooks_daemon(settings_for(make_settings, api)) as server:
        identifier = installed(server.client, write_plugin(tmp_path / "plain", secret=False))
        entity = one_endpoint(server.client, identifier, {"api_key": "visible"})
        assert entity["settings"] == {"api_key": "visible"}
        assert stored_settings(server, entity["id"]) == {"api_key": "visible"}
        with httpx.Client(base_url=server.url, timeout=30) as public:
            seen = public.get(f"/e/{entity['hook_id']}/echo").json()
        assert seen["settings"] == {"api_key": "visible"}
        assert api.calls("invoke/encrypt") == []


def test_management_needs_the_api_key(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DifyInnerAPI(key=INNER_KEY) as api, hooks_daemon(settings_for(make_settings, api)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as anonymous:
            response = anonymous.get(f"/plugin/{TENANT}/endpoint/list", params={"page": 1, "page_size": 10})
        assert response.status_code == 401
        assert json.loads(response.json()["message"])["error_type"] == "PluginDaemonUnauthorizedError"
