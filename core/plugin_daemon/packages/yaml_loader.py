"""YAML read the way the Go daemon (yaml.v3) reads it, into JSON-able Python values.

PyYAML speaks YAML 1.1, where ``yes``/``on`` are booleans, ``010`` is octal and timestamps become
datetimes. yaml.v3 speaks YAML 1.2 and, decoding into a string field, keeps a scalar's text
(``version: 3.10`` is ``"3.10"``). This loader resolves the YAML 1.2 core schema only, keeps
timestamps as text, and remembers the text of every number so a string field can have it back.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Mapping
from typing import Any

import yaml

from .errors import PackageError

MAX_NODES = 250_000
MAX_DEPTH = 200
#: Largest file parsed (``MAX_PLUGIN_YAML_SIZE``).
MAX_SIZE = 1024 * 1024


class YamlInt(int):
    """An int that remembers how it was written."""

    source: str


class YamlFloat(float):
    """A float that remembers how it was written."""

    source: str


#: libyaml's parser (C) where PyYAML was built with it; the pure-Python one otherwise.
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    pass


_Loader.yaml_implicit_resolvers = {}
_Loader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_Loader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), ["<"])


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    try:
        if text.startswith("0o"):
            value = int(text[2:], 8)
        elif text.startswith("0x"):
            value = int(text[2:], 16)
        else:
            value = int(text, 10)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not an integer", node.start_mark) from None
    result = YamlInt(value)
    result.source = text
    return result


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node))
    lowered = text.lower()
    try:
        if lowered.endswith(".inf"):
            value = -math.inf if lowered.startswith("-") else math.inf
        elif lowered == ".nan":
            value = math.nan
        else:
            value = float(text)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a number", node.start_mark) from None
    result = YamlFloat(value)
    result.source = text
    return result


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def load_yaml(content: bytes, filename: str, *, max_size: int = MAX_SIZE) -> Any:
    """Parse one YAML document into plain JSON-able values; errors name ``filename``.

    A file over ``max_size`` bytes is refused before it is parsed. libyaml stops nesting at 1,000
    levels, the pure-Python parser at the interpreter's recursion limit, and the result may nest
    ``MAX_DEPTH`` levels.
    """
    if len(content) > max_size:
        raise PackageError(
            f"{filename}: {len(content)} bytes of YAML, more than the limit of {max_size} bytes (MAX_PLUGIN_YAML_SIZE)"
        )
    try:
        raw = yaml.load(content, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise PackageError(f"{filename}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise PackageError(f"{filename}: the YAML nests more than {MAX_DEPTH} levels deep") from None
    return _plain(raw, filename, [0], 0)


def scalar_text(value: Any) -> Any:
    """The text a scalar was written as, for a field that is a string; other values unchanged."""
    if isinstance(value, YamlInt | YamlFloat):
        return value.source
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _plain(value: Any, filename: str, count: list[int], depth: int) -> Any:
    count[0] += 1
    if count[0] > MAX_NODES or depth > MAX_DEPTH:
        raise PackageError(f"{filename}: the YAML expands to too many values or nests too deeply")
    if isinstance(value, Mapping):
        return {_key(key): _plain(item, filename, count, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(item, filename, count, depth + 1) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if key is None:
        return "null"
    return str(scalar_text(key))
