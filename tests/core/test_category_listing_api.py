"""Listings by plugin category over real HTTP: ``installation/ids``, ``{category}/list`` and
``models/bindings``, as the Go daemon answers them, on SQLite and on the real PostgreSQL.

The plugins are real packages installed through the API (in-memory runtime): three tools (the
echo tool and two renamed copies with tags and translated labels), the mock model plugin and an
endpoints-only plugin (category ``extension``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml
from plugin_daemon.packages import build_package
from plugin_daemon.store.models import CATEGORY_TABLES, PluginDeclarationRow
from sqlalchemy import delete

from tests.core.endpoints.hooks import write_plugin
from tests.core.test_management_api import ECHO_TOOL, TENANT, envelope, error_of, install, upload, wait_task
from tests.support.daemon_server import running_daemon

MOCK_LLM = Path(__file__).parents[1] / "plugins" / "mock_llm"
M = f"/plugin/{TENANT}/management"
OTHER = "0191f1a2-0000-7000-8000-00000000a002"


def _plugin(tmp_path: Path, source: Path, folder: str, **manifest: Any) -> bytes:
    """The plugin at ``source`` with its manifest's fields replaced by ``manifest``, packaged."""
    target = tmp_path / folder
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / "manifest.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) | manifest, allow_unicode=True))
    return build_package(target)


def _packages(tmp_path: Path) -> dict[str, bytes]:
    weather = _plugin(
        tmp_path,
        ECHO_TOOL,
        "weather",
        name="weather",
        tags=["weather", "search"],
        label={"en_US": "Forecast", "zh_Hans": "天气预报"},
        description={"en_US": "Tells the weather"},
    )
    finder = _plugin(
        tmp_path,
        ECHO_TOOL,
        "finder",
        name="finder",
        tags=["search"],
        label={"en_US": "Finder"},
        description={"en_US": "Finds pages on the web"},
    )
    return {
        "echo_tool": build_package(ECHO_TOOL),
        "finder": finder,
        "weather": weather,
        "mock_llm": build_package(MOCK_LLM),
        "hooks": write_plugin(tmp_path / "hooks"),
    }


def _install_all(client: httpx.Client, packages: dict[str, bytes]) -> dict[str, str]:
    """Upload and install each package, one after the other (so newest first is the reverse)."""
    identifiers = {}
    for name, package in packages.items():
        identifiers[name] = envelope(upload(client, package))["unique_identifier"]
        assert install(client, identifiers[name])["status"] == "success"
    return identifiers


def _ids(client: httpx.Client, category: str, tenant: str = TENANT) -> Any:
    return envelope(client.get(f"/plugin/{tenant}/management/installation/ids", params={"category": category}))


def _listing(client: httpx.Client, category: str, **params: Any) -> httpx.Response:
    return client.get(f"{M}/{category}/list", params={"page": 1, "page_size": 10} | params)


def _listed(client: httpx.Client, category: str, **params: Any) -> tuple[list[str], bool]:
    data = envelope(_listing(client, category, **params))
    assert set(data) == {"list", "has_more"}
    return [item["plugin_id"] for item in data["list"]], data["has_more"]


def _bad_request(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    error = error_of(response)
    assert response.json()["code"] == -400
    assert error["error_type"] == "PluginDaemonBadRequestError"
    assert words in error["message"], error


def test_listings_by_category(make_settings, database_url, tmp_path: Path) -> None:
    packages = _packages(tmp_path)
    with running_daemon(make_settings(DATABASE_URL=database_url, PLATFORM="memory")) as server:
        client = server.client
        ids = _install_all(client, packages)

        # --- installation/ids: {"plugin_ids": [...]}, newest first, per category --------------
        assert _ids(client, "tool") == {"plugin_ids": ["tester/weather", "tester/finder", "tester/echo_tool"]}
        assert _ids(client, "model") == {"plugin_ids": ["tester/mock_llm"]}
        assert _ids(client, "extension") == {"plugin_ids": ["tester/hooks"]}
        for empty in ("agent-strategy", "datasource", "trigger"):
            assert _ids(client, empty) == {"plugin_ids": []}
        assert _ids(client, "tool", OTHER) == {"plugin_ids": []}
        assert _ids(client, "extension", OTHER) == {"plugin_ids": []}
        _bad_request(client.get(f"{M}/installation/ids"), 400, "'category' is required")
        _bad_request(client.get(f"{M}/installation/ids", params={"category": "tools"}), 200, "invalid plugin category")
        _bad_request(
            client.get(f"{M}/installation/ids", params={"category": "agent_strategy"}), 200, "invalid plugin category"
        )

        # --- {category}/list: the items of management/list, newest first, paged ---------------
        everything = envelope(client.get(f"{M}/list", params={"page": 1, "page_size": 256}))
        assert everything["total"] == 5
        installed_in_order = [identifier.split(":")[0] for identifier in ids.values()]
        assert [item["plugin_id"] for item in everything["list"]] == installed_in_order[::-1]  # newest first, as Go
        by_id = {item["plugin_id"]: item for item in everything["list"]}
        tools = envelope(_listing(client, "tool"))
        assert tools == {
            "list": [by_id["tester/weather"], by_id["tester/finder"], by_id["tester/echo_tool"]],
            "has_more": False,
        }
        assert tools["list"][0]["plugin_unique_identifier"] == ids["weather"]
        assert _listed(client, "tool", page_size=2) == (["tester/weather", "tester/finder"], True)
        assert _listed(client, "tool", page=2, page_size=2) == (["tester/echo_tool"], False)
        assert _listed(client, "tool", page=3, page_size=2) == ([], False)
        assert _listed(client, "tool", page_size=3) == (["tester/weather", "tester/finder", "tester/echo_tool"], False)
        assert _listed(client, "model") == (["tester/mock_llm"], False)
        assert _listed(client, "extension") == (["tester/hooks"], False)
        assert envelope(_listing(client, "extension"))["list"] == [by_id["tester/hooks"]]
        assert _listed(client, "agent-strategy") == ([], False)
        assert _listed(client, "trigger") == ([], False)
        other = envelope(client.get(f"/plugin/{OTHER}/management/tool/list", params={"page": 1, "page_size": 10}))
        assert other == {"list": [], "has_more": False}

        # filters: any of the tags, then the query (case-insensitive) in id, name, label, description
        assert _listed(client, "tool", tags="search") == (["tester/weather", "tester/finder"], False)
        assert _listed(client, "tool", tags=["rag", "weather"]) == (["tester/weather"], False)
        assert _listed(client, "tool", tags="rag") == ([], False)
        assert _listed(client, "model", tags="search") == ([], False)
        assert _listed(client, "tool", query="FORECAST") == (["tester/weather"], False)  # label
        assert _listed(client, "tool", query="Finder") == (["tester/finder"], False)  # name and label
        assert _listed(client, "tool", query="pages on the WEB") == (["tester/finder"], False)  # description
        assert _listed(client, "tool", query="tester/ech") == (["tester/echo_tool"], False)  # plugin id
        assert _listed(client, "tool", query="天气", language="zh_Hans") == (["tester/weather"], False)
        assert _listed(client, "tool", query="天气") == ([], False)  # en_US by default
        assert _listed(client, "tool", query="天气", language="ja_JP") == ([], False)  # no ja_JP label: en_US
        assert _listed(client, "tool", query="forecast", language="ja_JP") == (["tester/weather"], False)
        assert _listed(client, "tool", query="nothing like it") == ([], False)
        # filtering comes before paging
        assert _listed(client, "tool", tags="search", page_size=1) == (["tester/weather"], True)
        assert _listed(client, "tool", tags="search", page=2, page_size=1) == (["tester/finder"], False)
        assert _listed(client, "tool", query="e", tags="search", language="en_US", page=2, page_size=1) == (
            ["tester/finder"],
            False,
        )

        # the parameters are checked first (HTTP 400), then the category (200, as Dify expects errors)
        bad_params: list[tuple[dict[str, Any], str]] = [
            ({"page": None}, "'page' is required"),
            ({"page": 0}, "'page' is required"),
            ({"page": "one"}, "'page' is required"),
            ({"page_size": None}, "'page_size' is required"),
            ({"page_size": 0}, "from 1 to 256"),
            ({"page_size": 257}, "from 1 to 256"),
            ({"language": "fr_FR"}, "'language' must be one of"),
            ({"tags": "cooking"}, "unknown plugin tag 'cooking'"),
            ({"tags": ["search"] * 129}, "at most 128"),
            ({"query": "q" * 257}, "at most 256 characters"),
        ]
        for params, words in bad_params:
            _bad_request(_listing(client, "tool", **params), 400, words)
        _bad_request(_listing(client, "tools"), 200, "invalid plugin category 'tools'")
        _bad_request(_listing(client, "tools", page=None), 400, "'page' is required")
        assert _listed(client, "tool", query="q" * 256) == ([], False)

        # the fixed routes still win over {category}/list
        assert envelope(client.get(f"{M}/list", params={"page": 1, "page_size": 1}))["total"] == 5
        listed_tools = envelope(client.get(f"{M}/tools", params={"page": 1, "page_size": 10}))
        assert {tool["plugin_id"] for tool in listed_tools} == {"tester/weather", "tester/finder", "tester/echo_tool"}
        models = envelope(client.get(f"{M}/models", params={"page": 1, "page_size": 10}))
        assert [model["plugin_id"] for model in models] == ["tester/mock_llm"]
        assert len(envelope(client.get(f"{M}/install/tasks", params={"page": 1, "page_size": 10}))) == 5

        # --- models/bindings: the installation serving each model provider --------------------
        mock_llm = by_id["tester/mock_llm"]
        binding = {
            "provider": "mock_llm",
            "installation_id": mock_llm["id"],
            "plugin_id": "tester/mock_llm",
            "plugin_unique_identifier": ids["mock_llm"],
            "runtime_type": "memory",
            "source": "package",
            "version": "0.0.1",
            "verified": False,
        }
        assert envelope(client.get(f"{M}/models/bindings")) == [binding]
        assert envelope(client.get(f"/plugin/{OTHER}/management/models/bindings")) == []

        # an upgrade binds the provider to the new version, in the same installation
        newer = _plugin(tmp_path, MOCK_LLM, "mock_llm_new", version="0.0.2")
        newer_id = envelope(upload(client, newer))["unique_identifier"]
        started = envelope(
            client.post(
                f"{M}/install/upgrade",
                json={
                    "original_plugin_unique_identifier": ids["mock_llm"],
                    "new_plugin_unique_identifier": newer_id,
                    "source": "package",
                    "meta": {},
                },
            )
        )
        assert wait_task(client, started["task_id"])["status"] == "success"
        upgraded = binding | {"plugin_unique_identifier": newer_id, "version": "0.0.2"}
        assert envelope(client.get(f"{M}/models/bindings")) == [upgraded]

        # a provider recorded twice is bound once; one recorded for another version is not bound
        models_table = CATEGORY_TABLES["model"]
        with server.daemon.manager.db.transaction() as session:
            for identifier in (newer_id, ids["mock_llm"]):
                session.add(
                    models_table(
                        tenant_id=TENANT,
                        provider="mock_llm" if identifier == newer_id else "stale",
                        plugin_unique_identifier=identifier,
                        plugin_id="tester/mock_llm",
                    )
                )
        assert envelope(client.get(f"{M}/models/bindings")) == [upgraded]


def test_an_installation_without_its_declaration_is_an_error(make_settings, tmp_path: Path) -> None:
    """As in the Go daemon, a listing that needs a declaration it cannot find fails, saying which."""
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        client = server.client
        identifier = envelope(upload(client, build_package(MOCK_LLM)))["unique_identifier"]
        assert install(client, identifier)["status"] == "success"
        with server.daemon.manager.db.transaction() as session:
            session.execute(
                delete(PluginDeclarationRow).where(PluginDeclarationRow.plugin_unique_identifier == identifier)
            )
        for response in (
            _listing(client, "model"),
            client.get(f"{M}/installation/ids", params={"category": "extension"}),
            client.get(f"{M}/models/bindings"),
        ):
            assert response.status_code == 200
            error = error_of(response)
            assert error["error_type"] == "PluginDaemonInternalServerError"
            assert "failed to get plugin declaration" in error["message"]
            assert identifier in error["message"]
        # the model table alone answers installation/ids for a model
        assert _ids(client, "model") == {"plugin_ids": ["tester/mock_llm"]}
