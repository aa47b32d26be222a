"""Endpoints follow their installation: an upgrade keeps them, an uninstall removes them."""

from __future__ import annotations

from pathlib import Path

from plugin_daemon.packages import build_package

from tests.core.endpoints.hooks import (
    INNER_KEY,
    endpoints,
    hooks_daemon,
    installed,
    one_endpoint,
    settings_for,
    write_plugin,
)
from tests.core.test_management_api import TENANT, envelope
from tests.support.dify_inner_api import DifyInnerAPI


def listing(client):  # type: ignore[no-untyped-def]
    return envelope(client.get(f"/plugin/{TENANT}/management/list", params={"page": 1, "page_size": 10}))["list"]


def test_upgrade_keeps_endpoints_and_uninstall_removes_them(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with DifyInnerAPI(key=INNER_KEY) as api, hooks_daemon(settings_for(make_settings, api)) as server:
        client = server.client
        first = installed(client, write_plugin(tmp_path / "v1"))
        endpoint = one_endpoint(client, first, {"api_key": "k"})
        assert client.get(f"{server.url}/e/{endpoint['hook_id']}/echo").status_code == 201

        folder = tmp_path / "v1"
        manifest = folder / "manifest.yaml"
        manifest.write_text(manifest.read_text().replace("version: 0.0.1\n", "version: 0.0.2\n", 1))
        second = installed(client, build_package(folder))
        assert second != first
        (entry,) = listing(client)
        assert entry["plugin_unique_identifier"] == second
        assert (entry["endpoints_setups"], entry["endpoints_active"]) == (1, 1)
        assert [e["id"] for e in endpoints(client)] == [endpoint["id"]]
        assert client.get(f"{server.url}/e/{endpoint['hook_id']}/echo").status_code == 201

        assert envelope(
            client.post(f"/plugin/{TENANT}/management/uninstall", json={"plugin_installation_id": entry["id"]})
        )
        assert endpoints(client) == []
        assert client.get(f"{server.url}/e/{endpoint['hook_id']}/echo").status_code == 404
