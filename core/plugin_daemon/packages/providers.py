"""Provider YAMLs named by manifest.yaml, expanded the way the Go daemon expands them.

Each provider file lists further files (tools, strategies, endpoints, events, datasources) or,
for a model provider, glob patterns and ``_position.yaml`` files; those are read in and put in place
of their paths. Fields the Go daemon reshapes are reshaped the same way (a ``credentials_for_provider``
mapping becomes the ``credentials_schema`` list, model parameter templates are filled in); any other
field is passed through as written.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .errors import PackageError
from .manifest import relative_path
from .yaml_loader import MAX_SIZE as MAX_YAML_SIZE
from .yaml_loader import load_yaml, scalar_text

Normalizer = Callable[[dict[str, Any], str], dict[str, Any]]

# The model types whose section in a provider's `models` mapping the Go daemon reads.
MODEL_SECTIONS = ("llm", "text_embedding", "tts", "speech2text", "moderation", "rerank")
POSITION_SUFFIX = "_position.yaml"

_FLOAT, _INT, _STRING = "float", "int", "string"
# Values a parameter rule gets from `use_template` (the same numbers as Dify's templates; our own help text).
PARAMETER_TEMPLATES: dict[str, dict[str, Any]] = {
    "temperature": {
        "type": _FLOAT,
        "default": 0.0,
        "min": 0.0,
        "max": 1.0,
        "precision": 2,
        "help": "Sampling temperature: lower is more focused and repeatable, higher is more varied.",
    },
    "top_p": {
        "type": _FLOAT,
        "default": 1.0,
        "min": 0.0,
        "max": 1.0,
        "precision": 2,
        "help": "Nucleus sampling: only tokens within this cumulative probability are considered.",
    },
    "top_k": {
        "type": _INT,
        "default": 50,
        "min": 1.0,
        "max": 100.0,
        "precision": 0,
        "help": "Only the K most likely tokens are considered at each step.",
    },
    "presence_penalty": {
        "type": _FLOAT,
        "default": 0.0,
        "min": 0.0,
        "max": 1.0,
        "precision": 2,
        "help": "Penalises tokens that already appear in the text.",
    },
    "frequency_penalty": {
        "type": _FLOAT,
        "default": 0.0,
        "min": 0.0,
        "max": 1.0,
        "precision": 2,
        "help": "Penalises tokens by how often they already appear in the text.",
    },
    "max_tokens": {
        "type": _INT,
        "default": 64,
        "min": 1.0,
        "max": 2048.0,
        "precision": 0,
        "help": "Upper limit on the number of tokens generated.",
    },
    "response_format": {
        "type": _STRING,
        "options": ["JSON", "XML"],
        "help": "Ask the model to answer in this format.",
    },
    "json_schema": {"type": _STRING, "help": "A JSON schema the model's answer must follow."},
}


#: A package's YAML parsed in all (each file counted as often as it is read), in files of the largest size.
YAML_BUDGET_FILES = 8


class PackageFiles:
    """Reads YAML files of the package by the paths other YAML files give.

    Each file may be ``max_yaml_size`` bytes, and all that is parsed together (a file named
    twice counts twice) ``YAML_BUDGET_FILES`` times that: parsing costs CPU, and a package that
    names one file thousands of times must not cost thousands of parses.
    """

    def __init__(self, files: Mapping[str, bytes], *, max_yaml_size: int = MAX_YAML_SIZE) -> None:
        self.files = files
        self.max_yaml_size = max_yaml_size
        self.yaml_budget = max_yaml_size * YAML_BUDGET_FILES

    def parse(self, path: str) -> Any:
        """The YAML file at ``path`` (which must be in the package), counted against the budget."""
        content = self.files[path]
        if len(content) > self.max_yaml_size:  # said as such, before the budget speaks of the whole package
            return load_yaml(content, path, max_size=self.max_yaml_size)
        self.yaml_budget -= len(content)
        if self.yaml_budget < 0:
            raise PackageError(
                f"{path}: the package's YAML files come to more than {YAML_BUDGET_FILES} times "
                f"MAX_PLUGIN_YAML_SIZE ({self.max_yaml_size} bytes) in all"
            )
        return load_yaml(content, path, max_size=self.max_yaml_size)

    def mapping(self, path: Any, referrer: str, field: str) -> tuple[str, dict[str, Any]]:
        """Load the YAML at ``path`` (named in ``referrer``'s ``field``); it must be a mapping."""
        try:
            path = relative_path(path)
        except ValueError as exc:
            raise PackageError(f"{referrer}: field '{field}' {exc}") from None
        content = self.load(path, referrer, field)
        if not isinstance(content, dict):
            raise PackageError(f"{path}: expected a mapping of fields, got {_kind(content)}")
        return path, content

    def load(self, path: str, referrer: str, field: str) -> Any:
        if path not in self.files:
            raise PackageError(f"{referrer}: field '{field}' refers to '{path}', which is not in the package")
        return self.parse(path)


def tool_provider(files: PackageFiles, path: str) -> dict[str, Any]:
    path, raw = files.mapping(path, "manifest.yaml", "plugins.tools")
    provider = _with_identity(raw, path)
    schema = raw.get("credentials_schema")
    if not schema:
        schema = raw.get("credentials_for_provider")
    provider.pop("credentials_for_provider", None)
    provider["credentials_schema"] = _config_list(schema, path, "credentials_schema")
    provider.setdefault("oauth_schema", None)
    provider["tools"] = _expand(files, raw.get("tools"), path, "tools", _tool)
    return provider


def model_provider(files: PackageFiles, path: str) -> dict[str, Any]:
    path, raw = files.mapping(path, "manifest.yaml", "plugins.models")
    provider = dict(raw)
    if not scalar_text(raw.get("provider")):
        raise PackageError(f"{path}: field 'provider' is required")
    for key in ("provider_credential_schema", "model_credential_schema"):
        provider[key] = _credential_schema(raw.get(key), path, key)
    models = raw.get("models")
    if isinstance(models, dict):
        provider["position"] = _positions(files, models, path)
        provider["models"] = _globbed_models(files, models, path)
    elif isinstance(models, list):
        provider["models"] = [_model(_must_map(item, path, f"models[{i}]"), path) for i, item in enumerate(models)]
    elif models is None:
        provider["models"] = []
    else:
        raise PackageError(f"{path}: field 'models' must be a mapping of model types or a list, got {_kind(models)}")
    return provider


def endpoint_group(files: PackageFiles, path: str) -> dict[str, Any]:
    path, raw = files.mapping(path, "manifest.yaml", "plugins.endpoints")
    group = dict(raw)
    group["settings"] = _config_list(raw.get("settings"), path, "settings")
    group["endpoints"] = _expand(files, raw.get("endpoints"), path, "endpoints", _endpoint)
    return group


def agent_strategy_provider(files: PackageFiles, path: str) -> dict[str, Any]:
    path, raw = files.mapping(path, "manifest.yaml", "plugins.agent_strategies")
    provider = _with_identity(raw, path)
    provider["strategies"] = _expand(files, raw.get("strategies"), path, "strategies", _strategy)
    return provider


def datasource_provider(files: PackageFiles, path: str) -> dict[str, Any]:
    path, raw = files.mapping(path, "manifest.yaml", "plugins.datasources")
    provider = _with_identity(raw, path)
    provider["credentials_schema"] = _config_list(raw.get("credentials_schema"), path, "credentials_schema")
    provider.setdefault("oauth_schema", None)
    provider["datasources"] = _expand(files, raw.get("datasources"), path, "datasources", _as_is)
    return provider


def trigger_provider(files: PackageFiles, path: str) -> dict[str, Any]:
    path, raw = files.mapping(path, "manifest.yaml", "plugins.triggers")
    provider = _with_identity(raw, path)
    provider["subscription_schema"] = _config_list(raw.get("subscription_schema"), path, "subscription_schema")
    constructor = raw.get("subscription_constructor")
    if isinstance(constructor, dict):
        constructor = dict(constructor)
        constructor["parameters"] = _list(constructor.get("parameters"), path, "subscription_constructor.parameters")
        constructor["credentials_schema"] = _config_list(
            constructor.get("credentials_schema"), path, "subscription_constructor.credentials_schema"
        )
    elif constructor is not None:
        raise PackageError(f"{path}: field 'subscription_constructor' must be a mapping, got {_kind(constructor)}")
    provider["subscription_constructor"] = constructor
    provider["events"] = _expand(files, raw.get("events"), path, "events", _as_is)
    return provider


def typed_like_go(value: Any, key: str = "") -> Any:
    """Give the text of a scalar back where the Go daemon's struct field is a string.

    yaml.v3 decodes ``value: 0`` or ``value: false`` into a string field as "0" / "false", and Dify
    expects text there: i18n texts (a null one is dropped) and option values and names.
    """
    if isinstance(value, dict):
        if "en_US" in value:
            return {
                lang: scalar_text(text)
                for lang, text in value.items()
                if text is not None and not isinstance(text, dict | list)
            }
        return {name: typed_like_go(item, name) for name, item in value.items()}
    if isinstance(value, list):
        if key == "options":
            return [_option(item) for item in value]
        return [typed_like_go(item) for item in value]
    return value


def _option(option: Any) -> Any:
    if isinstance(option, dict):
        option = typed_like_go(option)
        if "value" in option and option["value"] is not None:
            option["value"] = scalar_text(option["value"])
        return option
    return scalar_text(option)


# --- pieces -----------------------------------------------------------------------------


def _with_identity(raw: dict[str, Any], path: str) -> dict[str, Any]:
    identity = raw.get("identity")
    if identity is None:
        raise PackageError(f"{path}: field 'identity' is required")
    identity = dict(_must_map(identity, path, "identity"))
    if identity.get("tags") is None:
        identity["tags"] = []
    return {**raw, "identity": identity}


def _expand(files: PackageFiles, items: Any, path: str, field: str, normalize: Normalizer) -> list[dict[str, Any]]:
    """A list whose items are file paths (read in) or inline mappings, in order."""
    expanded = []
    for index, item in enumerate(_list(items, path, field)):
        if isinstance(item, dict):
            expanded.append(normalize(dict(item), path))
            continue
        if not isinstance(scalar_text(item), str):
            raise PackageError(f"{path}: field '{field}[{index}]' must be a file path or a mapping, got {item!r}")
        item_path, content = files.mapping(item, path, f"{field}[{index}]")
        expanded.append(normalize(content, item_path))
    return expanded


def _list(value: Any, path: str, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PackageError(f"{path}: field '{field}' must be a list, got {_kind(value)}")
    return value


def _config_list(value: Any, path: str, field: str) -> list[Any]:
    """Provider configs given as a list, or as a mapping of name -> config (the name goes inside)."""
    if isinstance(value, dict):
        configs = []
        for name, config in value.items():
            configs.append({**_must_map(config, path, f"{field}.{name}"), "name": name})
        return configs
    return _list(value, path, field)


def _must_map(value: Any, path: str, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PackageError(f"{path}: field '{field}' must be a mapping, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}.get(type(value), repr(value))


def _as_is(item: dict[str, Any], path: str) -> dict[str, Any]:
    return item


def _tool(tool: dict[str, Any], path: str) -> dict[str, Any]:
    tool["parameters"] = _list(tool.get("parameters"), path, "parameters")
    tool.setdefault("has_runtime_parameters", False)
    return tool


def _endpoint(endpoint: dict[str, Any], path: str) -> dict[str, Any]:
    endpoint.setdefault("hidden", False)
    return endpoint


def _strategy(strategy: dict[str, Any], path: str) -> dict[str, Any]:
    strategy["features"] = _list(strategy.get("features"), path, "features")
    return strategy


def _credential_schema(schema: Any, path: str, field: str) -> Any:
    if schema is None:
        return None
    schema = dict(_must_map(schema, path, field))
    forms = []
    for index, form in enumerate(
        _list(schema.get("credential_form_schemas"), path, f"{field}.credential_form_schemas")
    ):
        form = dict(_must_map(form, path, f"{field}.credential_form_schemas[{index}]"))
        form["show_on"] = _list(form.get("show_on"), path, f"{field}.credential_form_schemas[{index}].show_on")
        options = _list(form.get("options"), path, f"{field}.credential_form_schemas[{index}].options")
        form["options"] = [
            {**option, "show_on": option.get("show_on") or []} if isinstance(option, dict) else option
            for option in options
        ]
        forms.append(form)
    schema["credential_form_schemas"] = forms
    return schema


def _positions(files: PackageFiles, models: dict[str, Any], path: str) -> dict[str, list[str]]:
    positions: dict[str, list[str]] = {}
    for section_name in MODEL_SECTIONS:
        section = models.get(section_name)
        if not isinstance(section, dict) or section.get("position") is None:
            continue
        field = f"models.{section_name}.position"
        try:
            position_path = relative_path(section["position"])
        except ValueError as exc:
            raise PackageError(f"{path}: field '{field}' {exc}") from None
        order = files.load(position_path, path, field)
        if not isinstance(order, list) or not all(isinstance(scalar_text(name), str) for name in order):
            raise PackageError(f"{position_path}: expected a list of model names")
        positions[section_name] = [str(scalar_text(name)) for name in order]
    return positions


def _globbed_models(files: PackageFiles, models: dict[str, Any], path: str) -> list[dict[str, Any]]:
    patterns: list[re.Pattern[str]] = []
    for section_name in MODEL_SECTIONS:
        section = models.get(section_name)
        if not isinstance(section, dict):
            continue
        field = f"models.{section_name}.predefined"
        for index, pattern in enumerate(_list(section.get("predefined"), path, field)):
            try:
                patterns.append(_glob(relative_path(pattern)))
            except ValueError as exc:
                raise PackageError(f"{path}: field '{field}[{index}]' {exc}") from None
    declarations = []
    for name in files.files:  # zip order, as the Go daemon walks it
        if name.endswith(POSITION_SUFFIX) or not any(p.fullmatch(name) for p in patterns):
            continue
        content = files.load(name, path, "models")
        declarations.append(_model(_must_map(content, name, "(top level)"), name))
    return declarations


def _glob(pattern: str) -> re.Pattern[str]:
    """Go's path.Match syntax as a regex: '*' and '?' never cross a '/'."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        elif char == "[":
            end = pattern.find("]", index + 2)
            if end < 0:
                raise ValueError(f"is not a valid glob pattern: {pattern!r}")
            body = pattern[index + 1 : end]
            negate = body.startswith("^")
            body = "".join(c if c == "-" else re.escape(c) for c in (body[1:] if negate else body))
            out.append(f"[{'^/' if negate else ''}{body}]")
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


def _model(model: dict[str, Any], path: str) -> dict[str, Any]:
    model = dict(model)
    name = scalar_text(model.get("model"))
    if not isinstance(name, str) or not name:
        raise PackageError(f"{path}: field 'model' is required")
    model["model"] = name
    label = model.get("label")
    if not isinstance(label, dict) or not label.get("en_US"):
        model["label"] = {**(label if isinstance(label, dict) else {}), "en_US": name}
    if not model.get("fetch_from"):
        model["fetch_from"] = "predefined-model"
    rules = _list(model.get("parameter_rules"), path, "parameter_rules")
    model["parameter_rules"] = [
        _parameter_rule(_must_map(rule, path, f"parameter_rules[{i}]"), path) for i, rule in enumerate(rules)
    ]
    return model


def _parameter_rule(rule: dict[str, Any], path: str) -> dict[str, Any]:
    rule = dict(rule)
    name = scalar_text(rule.get("name"))
    label = rule.get("label")
    if not isinstance(label, dict) or not label.get("en_US"):
        rule["label"] = {"en_US": name}
    template_name = rule.get("use_template")
    if template_name:
        template = PARAMETER_TEMPLATES.get(str(template_name))
        if template is None:
            raise PackageError(
                f"{path}: parameter rule {name!r} uses unknown template {template_name!r}"
                f" (known: {', '.join(PARAMETER_TEMPLATES)})"
            )
        for key, value in template.items():
            if rule.get(key) is None:
                rule[key] = {"en_US": value} if key == "help" else value
    if rule.get("options") is None:
        rule["options"] = []
    return rule
