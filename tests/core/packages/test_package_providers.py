"""Provider YAMLs: expansion of each kind, combinations, and files that are missing or escape."""

from __future__ import annotations

from typing import Any

import pytest
from plugin_daemon.packages import PackageError, decode_package

from tests.core.packages.packages_helpers import (
    ICON,
    MANIFEST,
    changed,
    media_id_by_the_spec,
    to_yaml,
    tool_plugin,
    zip_files,
)

ICON_ID = media_id_by_the_spec("icon.svg", ICON)


def plugin(plugins: dict[str, list[str]], extra: dict[str, Any]) -> dict[str, bytes]:
    files = tool_plugin(changed(MANIFEST, plugins=plugins))
    files.update({path: to_yaml(value) if not isinstance(value, bytes) else value for path, value in extra.items()})
    return files


def decode(files: dict[str, bytes]) -> dict[str, Any]:
    return decode_package(zip_files(files)).declaration


def decode_error(files: dict[str, bytes]) -> str:
    with pytest.raises(PackageError) as caught:
        decode_package(zip_files(files))
    return caught.value.message


MODEL_PROVIDER = {
    "provider": "mock",
    "label": {"en_US": "Mock"},
    "icon_small": {"en_US": "icon.svg"},
    "icon_large": {"en_US": "icon.svg", "zh_Hans": "icon.svg"},
    "supported_model_types": ["llm", "text-embedding"],
    "configurate_methods": ["predefined-model"],
    "provider_credential_schema": {
        "credential_form_schemas": [
            {
                "variable": "api_key",
                "label": {"en_US": "API key"},
                "type": "select",
                "required": True,
                "options": [{"value": "a", "label": {"en_US": "A"}}],
            }
        ]
    },
    "models": {
        "llm": {"predefined": ["models/llm/*.yaml"], "position": "models/llm/_position.yaml"},
        "text_embedding": {"predefined": ["models/text_embedding/*.yaml"]},
    },
}


def model_plugin() -> dict[str, bytes]:
    return plugin(
        {"models": ["provider/mock.yaml"]},
        {
            "provider/mock.yaml": MODEL_PROVIDER,
            "models/llm/_position.yaml": ["beta", "alpha"],
            "models/llm/alpha.yaml": {
                "model": "alpha",
                "model_type": "llm",
                "model_properties": {"mode": "chat", "context_size": 4096},
                "parameter_rules": [
                    {"name": "temperature", "use_template": "temperature"},
                    {"name": "max_tokens", "use_template": "max_tokens", "max": 4096},
                    {"name": "seed", "label": {"en_US": "Seed"}, "type": "int"},
                ],
            },
            "models/llm/beta.yaml": {"model": "beta", "label": {"en_US": "Beta"}, "model_type": "llm"},
            "models/llm/nested/gamma.yaml": {"model": "gamma", "model_type": "llm"},  # '*' stops at '/'
            "models/text_embedding/embed.yaml": {"model": "embed", "model_type": "text-embedding"},
        },
    )


def test_model_provider_expands_globs_positions_and_templates() -> None:
    files = model_plugin()
    del files["provider/demo.yaml"], files["tools/echo.yaml"]
    model = decode(files)["model"]

    assert [m["model"] for m in model["models"]] == ["alpha", "beta", "embed"]  # zip order
    assert model["position"] == {"llm": ["beta", "alpha"]}
    assert model["description"] == {"en_US": "A demo plugin."}  # from the manifest
    assert model["icon_small"] == {"en_US": ICON_ID}
    assert model["icon_large"] == {"en_US": ICON_ID, "zh_Hans": ICON_ID}
    form = model["provider_credential_schema"]["credential_form_schemas"][0]
    assert form["show_on"] == []
    assert form["options"] == [{"value": "a", "label": {"en_US": "A"}, "show_on": []}]
    assert model["model_credential_schema"] is None

    alpha, beta, _ = model["models"]
    assert alpha["label"] == {"en_US": "alpha"}
    assert alpha["fetch_from"] == "predefined-model"
    temperature, max_tokens, seed = alpha["parameter_rules"]
    assert temperature["label"] == {"en_US": "temperature"}
    assert (temperature["type"], temperature["min"], temperature["max"], temperature["default"]) == (
        "float",
        0.0,
        1.0,
        0.0,
    )
    assert temperature["precision"] == 2
    assert temperature["help"]["en_US"]
    assert temperature["options"] == []
    assert (max_tokens["type"], max_tokens["max"], max_tokens["min"]) == ("int", 4096, 1.0)  # own value wins
    assert seed == {"name": "seed", "label": {"en_US": "Seed"}, "type": "int", "options": []}
    assert beta["label"] == {"en_US": "Beta"}
    assert beta["parameter_rules"] == []


def test_model_provider_with_inline_models_list() -> None:
    provider = changed(MODEL_PROVIDER, models=[{"model": "inline", "model_type": "llm"}])
    files = plugin({"models": ["provider/mock.yaml"]}, {"provider/mock.yaml": provider})
    model = decode(files)["model"]
    assert [m["model"] for m in model["models"]] == ["inline"]
    assert "position" not in model


def test_unknown_parameter_template() -> None:
    files = model_plugin()
    files["models/llm/beta.yaml"] = to_yaml(
        {"model": "beta", "model_type": "llm", "parameter_rules": [{"name": "x", "use_template": "nope"}]}
    )
    assert decode_error(files).startswith("models/llm/beta.yaml: parameter rule 'x' uses unknown template 'nope'")


def test_missing_position_file() -> None:
    files = model_plugin()
    del files["models/llm/_position.yaml"]
    assert decode_error(files) == (
        "provider/mock.yaml: field 'models.llm.position' refers to 'models/llm/_position.yaml',"
        " which is not in the package"
    )


def test_model_glob_that_escapes() -> None:
    files = model_plugin()
    files["provider/mock.yaml"] = to_yaml(changed(MODEL_PROVIDER, models={"llm": {"predefined": ["../*.yaml"]}}))
    assert decode_error(files) == (
        "provider/mock.yaml: field 'models.llm.predefined[0]' escapes the package folder: '../*.yaml'"
    )


def test_model_provider_missing_icon_asset() -> None:
    files = model_plugin()
    files["provider/mock.yaml"] = to_yaml(changed(MODEL_PROVIDER, icon_small={"en_US": "small.png"}))
    assert decode_error(files) == (
        "model provider field 'icon_small.en_US' refers to _assets/small.png, which is not in the package"
    )


@pytest.mark.parametrize(
    ("plugins", "message"),
    [
        (
            {"models": ["provider/mock.yaml"], "tools": ["provider/demo.yaml"]},
            "manifest.yaml: 'plugins.models' cannot be combined with plugins.tools;"
            " only tools and endpoints may be combined",
        ),
        ({"models": ["m.yaml"], "endpoints": ["e.yaml"]}, "'plugins.models' cannot be combined with plugins.endpoints"),
        ({"agent_strategies": ["a.yaml"], "tools": ["t.yaml"]}, "'plugins.agent_strategies' cannot be combined"),
        ({"datasources": ["d.yaml"], "endpoints": ["e.yaml"]}, "'plugins.datasources' cannot be combined"),
        ({"triggers": ["t.yaml"], "tools": ["x.yaml"]}, "'plugins.triggers' cannot be combined"),
        ({"triggers": ["t.yaml"], "datasources": ["x.yaml"]}, "cannot be combined"),
    ],
)
def test_exclusive_categories(plugins: dict[str, list[str]], message: str) -> None:
    assert message in decode_error(plugin(plugins, {}))


ENDPOINT_GROUP = {
    "settings": [{"name": "secret", "type": "secret-input", "required": False, "label": {"en_US": "Secret"}}],
    "endpoints": ["endpoints/hello.yaml"],
}


def test_tool_and_endpoint_together_are_allowed() -> None:
    files = plugin(
        {"tools": ["provider/demo.yaml"], "endpoints": ["group/endpoints.yaml"]},
        {
            "group/endpoints.yaml": ENDPOINT_GROUP,
            "endpoints/hello.yaml": {"path": "/hello", "method": "GET", "extra": {"python": {"source": "e.py"}}},
        },
    )
    declaration = decode(files)
    assert declaration["category"] == "tool"
    assert declaration["tool"]["identity"]["name"] == "demo"
    assert declaration["endpoint"] == {
        "settings": ENDPOINT_GROUP["settings"],
        "endpoints": [{"path": "/hello", "method": "GET", "extra": {"python": {"source": "e.py"}}, "hidden": False}],
    }


def test_endpoint_only_plugin_is_an_extension() -> None:
    files = plugin(
        {"endpoints": ["group/endpoints.yaml"]},
        {"group/endpoints.yaml": ENDPOINT_GROUP, "endpoints/hello.yaml": {"path": "/hello", "method": "POST"}},
    )
    declaration = decode(files)
    assert declaration["category"] == "extension"
    assert declaration["tool"] is None


def test_agent_strategy_provider() -> None:
    files = plugin(
        {"agent_strategies": ["provider/agent.yaml"]},
        {
            "provider/agent.yaml": {
                "identity": {"author": "tester", "name": "agent", "label": {"en_US": "Agent"}, "icon": "icon.svg"},
                "strategies": ["strategies/react.yaml"],
            },
            "strategies/react.yaml": {
                "identity": {"name": "react", "author": "tester", "label": {"en_US": "ReAct"}},
                "description": {"en_US": "Reason and act."},
                "parameters": [],
            },
        },
    )
    declaration = decode(files)
    assert declaration["category"] == "agent-strategy"
    provider = declaration["agent_strategy"]
    assert provider["identity"]["icon"] == ICON_ID
    assert provider["identity"]["tags"] == []
    assert [s["identity"]["name"] for s in provider["strategies"]] == ["react"]
    assert provider["strategies"][0]["features"] == []


def test_datasource_provider() -> None:
    files = plugin(
        {"datasources": ["provider/ds.yaml"]},
        {
            "provider/ds.yaml": {
                "identity": {
                    "author": "tester",
                    "name": "ds",
                    "label": {"en_US": "DS"},
                    "icon": "icon.svg",
                    "description": {"en_US": "d"},
                },
                "provider_type": "online_document",
                "credentials_schema": {"token": {"type": "secret-input", "label": {"en_US": "Token"}}},
                "datasources": ["datasources/pages.yaml"],
            },
            "datasources/pages.yaml": {
                "identity": {"name": "pages", "author": "tester", "label": {"en_US": "Pages"}, "icon": "icon.svg"},
                "description": {"en_US": "Pages"},
                "parameters": [],
            },
        },
    )
    declaration = decode(files)
    assert declaration["category"] == "datasource"
    provider = declaration["datasource"]
    assert provider["credentials_schema"] == [{"type": "secret-input", "label": {"en_US": "Token"}, "name": "token"}]
    assert provider["identity"]["icon"] == ICON_ID
    assert provider["datasources"][0]["identity"]["icon"] == ICON_ID


def test_trigger_provider() -> None:
    files = plugin(
        {"triggers": ["provider/trigger.yaml"]},
        {
            "provider/trigger.yaml": {
                "identity": {"author": "tester", "name": "hooks", "label": {"en_US": "Hooks"}, "icon": "icon.svg"},
                "subscription_schema": {"url": {"type": "text-input", "label": {"en_US": "URL"}}},
                "subscription_constructor": {"credentials_schema": {"key": {"type": "secret-input"}}},
                "events": ["events/push.yaml"],
            },
            "events/push.yaml": {
                "identity": {"name": "push", "author": "tester", "label": {"en_US": "Push"}},
                "description": {"en_US": "A push happened."},
            },
        },
    )
    declaration = decode(files)
    assert declaration["category"] == "trigger"
    provider = declaration["trigger"]
    assert provider["subscription_schema"] == [{"type": "text-input", "label": {"en_US": "URL"}, "name": "url"}]
    assert provider["subscription_constructor"] == {
        "credentials_schema": [{"type": "secret-input", "name": "key"}],
        "parameters": [],
    }
    assert [e["identity"]["name"] for e in provider["events"]] == ["push"]
    assert provider["identity"]["description"] == {"en_US": "A demo plugin."}
    assert provider["identity"]["tags"] == ["utilities"]


def test_missing_provider_file() -> None:
    files = tool_plugin()
    del files["provider/demo.yaml"]
    assert decode_error(files) == (
        "manifest.yaml: field 'plugins.tools' refers to 'provider/demo.yaml', which is not in the package"
    )


def test_missing_tool_file() -> None:
    files = tool_plugin()
    del files["tools/echo.yaml"]
    assert decode_error(files) == (
        "provider/demo.yaml: field 'tools[0]' refers to 'tools/echo.yaml', which is not in the package"
    )


def test_tool_path_that_escapes() -> None:
    files = tool_plugin()
    files["provider/demo.yaml"] = files["provider/demo.yaml"].replace(b"tools/echo.yaml", b"../../etc/echo.yaml")
    assert (
        decode_error(files) == "provider/demo.yaml: field 'tools[0]' escapes the package folder: '../../etc/echo.yaml'"
    )


def test_provider_without_identity() -> None:
    files = tool_plugin()
    files["provider/demo.yaml"] = to_yaml({"tools": []})
    assert decode_error(files) == "provider/demo.yaml: field 'identity' is required"


def test_provider_file_that_is_not_a_mapping() -> None:
    files = tool_plugin()
    files["tools/echo.yaml"] = b"- a\n- b\n"
    assert decode_error(files) == "tools/echo.yaml: expected a mapping of fields, got a list"


def test_provider_file_with_bad_yaml() -> None:
    files = tool_plugin()
    files["tools/echo.yaml"] = b"identity: {name: [\n"
    assert decode_error(files).startswith("tools/echo.yaml: not valid YAML at line")


def test_inline_tools_and_credentials_list() -> None:
    files = tool_plugin()
    provider = {
        "identity": {
            "author": "tester",
            "name": "demo",
            "label": {"en_US": "Demo"},
            "icon": "icon.svg",
            "description": {"en_US": "Own description"},
            "tags": ["search"],
        },
        "credentials_schema": [{"name": "k", "type": "text-input"}],
        "tools": [{"identity": {"name": "inline", "author": "tester", "label": {"en_US": "Inline"}}}],
    }
    files["provider/demo.yaml"] = to_yaml(provider)
    tool = decode(files)["tool"]
    assert tool["identity"]["description"] == {"en_US": "Own description"}
    assert tool["identity"]["tags"] == ["search"]
    assert tool["credentials_schema"] == [{"name": "k", "type": "text-input"}]
    assert tool["tools"][0]["identity"]["name"] == "inline"
    assert tool["tools"][0]["parameters"] == []


def test_missing_tool_provider_icon() -> None:
    files = tool_plugin()
    files["provider/demo.yaml"] = files["provider/demo.yaml"].replace(b"icon: icon.svg", b"icon: gone.svg")
    assert decode_error(files) == (
        "tool provider field 'identity.icon' refers to _assets/gone.svg, which is not in the package"
    )


def test_scalars_in_text_fields_become_text_as_in_go() -> None:
    """yaml.v3 puts `value: 0` into a string field as "0"; Dify expects text for option values and i18n."""
    files = tool_plugin()
    files["tools/echo.yaml"] = files["tools/echo.yaml"] + (
        b"more:\n"
        b"  - name: level\n"
        b"    label: {en_US: 2024, zh_Hans: null}\n"
        b"    options:\n"
        b"      - {value: 0, label: {en_US: Zero}}\n"
        b"      - {value: false, label: {en_US: 'No'}}\n"
        b"      - {value: 1.50, label: {en_US: One and a half}}\n"
        b"    default: 0\n"
    )
    more = decode(files)["tool"]["tools"][0]["more"][0]
    assert more["label"] == {"en_US": "2024"}
    assert [option["value"] for option in more["options"]] == ["0", "false", "1.50"]
    assert more["default"] == 0  # `any` in Go: stays a number


def test_model_provider_icon_must_be_i18n() -> None:
    files = model_plugin()
    files["provider/mock.yaml"] = to_yaml(changed(MODEL_PROVIDER, icon_small="icon.svg"))
    assert decode_error(files) == "model provider field 'icon_small' must map languages to file names, got 'icon.svg'"
