"""manifest.yaml: the rules of the Go daemon's PluginDeclaration, checked with pydantic.

Every failure becomes one PackageError sentence naming the field, e.g.
``manifest.yaml: field 'version' must look like 1.2.3, got 'abc'``.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .errors import PackageError
from .identity import AUTHOR_RE, NAME_RE, VERSION_RE, looks_like_uuid
from .yaml_loader import scalar_text

MANIFEST = "manifest.yaml"
ARCHES = ("amd64", "arm64")
DEFAULT_STORAGE_SIZE = 1_048_576
MIN_STORAGE_SIZE = 1024
MAX_STORAGE_SIZE = 1_073_741_824
_FRACTION_RE = re.compile(r"\.[0-9]{7,}")
PROVIDER_LISTS = ("tools", "models", "endpoints", "agent_strategies", "datasources", "triggers")


def _text(value: Any) -> Any:
    return scalar_text(value)


Text = Annotated[str, BeforeValidator(_text)]


def _i18n(value: Any) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of language to text (with at least en_US), got {value!r}")
    value = {key: scalar_text(text) for key, text in value.items()}
    for language, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"must map each language to text, but {language} is {text!r}")
    if not value.get("en_US"):
        raise ValueError("must have a non-empty en_US text")
    return value


I18n = Annotated[dict[str, str], BeforeValidator(_i18n)]


def relative_path(value: Any) -> str:
    """A path inside the package, as written in a YAML file; ValueError when it is not one."""
    value = scalar_text(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a file path inside the package, got {value!r}")
    if "\\" in value or "\x00" in value:
        raise ValueError(f"must be a '/'-separated path inside the package, got {value!r}")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise ValueError(f"must be a relative path inside the package, got {value!r}")
    normal = posixpath.normpath(value)
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"escapes the package folder: {value!r}")
    return normal


class _Strict(BaseModel):
    model_config = ConfigDict(extra="allow")


#: ``meta.runner.language`` of a ``line/1`` plugin: a plain name (node, bash, go...).
LANGUAGE_RE = re.compile(r"[a-z][a-z0-9_.+-]{0,31}")


class Runner(_Strict):
    #: the wire protocol of the process: absent = the SDK's; ``line/1`` = docs/line-protocol.md
    #: (declared first: the language rule depends on it)
    protocol: Text | None = None
    language: Text
    version: Annotated[Text, Field(max_length=128)]
    entrypoint: Annotated[Text, Field(min_length=1, max_length=256)]

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str | None) -> str | None:
        from plugin_daemon.protocol.codecs import CODECS

        if value is not None and value not in CODECS:
            raise ValueError(f"must be one of {', '.join(sorted(CODECS))} (or absent for the SDK's), got {value!r}")
        return value

    @field_validator("language")
    @classmethod
    def _language_fits_protocol(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("protocol") is None:
            if value != "python":
                raise ValueError(
                    f"must be 'python' (the only runner language of the SDK protocol; another language needs "
                    f"meta.runner.protocol: line/1), got {value!r}"
                )
        elif not LANGUAGE_RE.fullmatch(value):
            raise ValueError(f"must be a plain lower-case name (node, bash...), got {value!r}")
        return value


class Meta(_Strict):
    version: Text
    arch: list[Text] = Field(default_factory=lambda: list(ARCHES))
    runner: Runner
    minimum_dify_version: Text | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _check_version(value)

    @field_validator("arch")
    @classmethod
    def _arch(cls, value: list[str]) -> list[str]:
        for arch in value:
            if arch not in ARCHES:
                raise ValueError(f"must list only {' and '.join(ARCHES)}, got {arch!r}")
        return value


class Toggle(_Strict):
    enabled: bool = False


class ModelPermission(Toggle):
    llm: bool = False
    text_embedding: bool = False
    rerank: bool = False
    tts: bool = False
    speech2text: bool = False
    moderation: bool = False


class StoragePermission(Toggle):
    size: int = DEFAULT_STORAGE_SIZE

    @field_validator("size")
    @classmethod
    def _size(cls, value: int) -> int:
        if not MIN_STORAGE_SIZE <= value <= MAX_STORAGE_SIZE:
            raise ValueError(f"must be between {MIN_STORAGE_SIZE} and {MAX_STORAGE_SIZE} bytes, got {value}")
        return value


class Permission(_Strict):
    tool: Toggle | None = None
    model: ModelPermission | None = None
    node: Toggle | None = None
    endpoint: Toggle | None = None
    app: Toggle | None = None
    storage: StoragePermission | None = None


class Resource(_Strict):
    memory: int
    permission: Permission | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"must be a positive number of bytes, got {value}")
        return value


def _paths(value: Any) -> Any:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"must be a list of file paths, got {value!r}")
    return [relative_path(item) for item in value]


Paths = Annotated[list[str], BeforeValidator(_paths)]


class Plugins(_Strict):
    tools: Paths = Field(default_factory=list)
    models: Paths = Field(default_factory=list)
    endpoints: Paths = Field(default_factory=list)
    agent_strategies: Paths = Field(default_factory=list)
    datasources: Paths = Field(default_factory=list)
    triggers: Paths = Field(default_factory=list)


def _created_at(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a date-time like 2024-01-01T00:00:00Z, got {value!r}")
    text = value.strip()
    if len(text) > 10 and text[10] in "tT ":
        text = text[:10] + "T" + text[11:]
    text = _FRACTION_RE.sub(lambda match: match[0][:7], text)  # Python keeps microseconds, Go nanoseconds
    try:
        return dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"must be a date-time like 2024-01-01T00:00:00Z, got {value!r}") from None


class Manifest(_Strict):
    version: Text
    type: Text
    author: Text
    name: Text
    label: I18n
    description: I18n
    icon: Annotated[Text, Field(min_length=1, max_length=128)]
    icon_dark: Annotated[Text, Field(max_length=128)] = ""
    resource: Resource
    plugins: Plugins = Field(default_factory=Plugins)
    meta: Meta
    tags: list[Text] = Field(default_factory=list)
    created_at: Annotated[dt.datetime, BeforeValidator(_created_at)]
    privacy: Text | None = None
    repo: Text | None = None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        return _check_version(value)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if value != "plugin":
            raise ValueError(f"must be 'plugin', got {value!r}")
        return value

    @field_validator("author")
    @classmethod
    def _author(cls, value: str) -> str:
        if not AUTHOR_RE.fullmatch(value):
            raise ValueError(f"must be 1-64 characters of a-z, 0-9, '_' or '-', got {value!r}")
        if looks_like_uuid(value):
            raise ValueError(f"must not be a UUID (UUID authors are reserved for debugging plugins), got {value!r}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(f"must be 1-128 characters of a-z, 0-9, '_' or '-', got {value!r}")
        return value

    @field_validator("icon_dark", mode="before")
    @classmethod
    def _no_dark_icon(cls, value: Any) -> Any:
        return "" if value is None else value

    @field_validator("tags", mode="before")
    @classmethod
    def _no_tags(cls, value: Any) -> Any:
        return [] if value is None else value


def _check_version(value: str) -> str:
    if not VERSION_RE.fullmatch(value):
        raise ValueError(f"must look like 1.2.3 (optionally 1.2.3-beta), got {value!r}")
    return value


def parse_manifest(raw: Any) -> Manifest:
    """Validate the parsed manifest.yaml; raise PackageError naming the first bad field."""
    if not isinstance(raw, dict):
        raise PackageError(f"{MANIFEST}: expected a mapping of fields, got {type(raw).__name__}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise PackageError(describe_error(MANIFEST, exc)) from None


def describe_error(filename: str, exc: ValidationError) -> str:
    """One sentence for the first error pydantic found."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    found = error.get("input")
    if kind == "missing":
        return f"{filename}: field '{field}' is required"
    if kind == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{filename}: field '{field}' {reason}"
    if kind.endswith("too_short"):
        reason = "must not be empty" if not found else "is too short"
    elif kind.endswith("too_long"):
        reason = f"is too long (at most {error.get('ctx', {}).get('max_length', '?')} characters)"
    else:
        reason = _REASONS.get(kind.split("_", 1)[0], error["msg"].lower())
    return f"{filename}: field '{field}' {reason}, got {found!r}"


_REASONS = {
    "string": "must be text",
    "int": "must be a whole number",
    "bool": "must be true or false",
    "list": "must be a list",
    "dict": "must be a mapping",
    "model": "must be a mapping",
    "datetime": "must be a date-time like 2024-01-01T00:00:00Z",
}
