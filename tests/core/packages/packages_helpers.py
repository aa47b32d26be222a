"""Tiny plugins for the package tests: files as dicts, zipped with zipfile."""

from __future__ import annotations

import copy
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import yaml

DELETE = object()

ICON = b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>'

MANIFEST: dict[str, Any] = {
    "version": "0.0.1",
    "type": "plugin",
    "author": "tester",
    "name": "demo",
    "label": {"en_US": "Demo", "zh_Hans": "演示"},
    "description": {"en_US": "A demo plugin."},
    "icon": "icon.svg",
    "created_at": "2024-07-12T08:03:44.658609Z",
    "resource": {
        "memory": 268435456,
        "permission": {"tool": {"enabled": True}, "storage": {"enabled": True, "size": 1048576}},
    },
    "plugins": {"tools": ["provider/demo.yaml"]},
    "meta": {
        "version": "0.0.1",
        "arch": ["amd64", "arm64"],
        "runner": {"language": "python", "version": "3.12", "entrypoint": "main"},
    },
    "tags": ["utilities"],
}

TOOL_PROVIDER: dict[str, Any] = {
    "identity": {
        "author": "tester",
        "name": "demo",
        "label": {"en_US": "Demo"},
        "icon": "icon.svg",
    },
    "credentials_for_provider": {
        "api_key": {"type": "secret-input", "required": True, "label": {"en_US": "API key"}},
    },
    "tools": ["tools/echo.yaml"],
    "extra": {"python": {"source": "provider/demo.py"}},
}

ECHO_TOOL: dict[str, Any] = {
    "identity": {"name": "echo", "author": "tester", "label": {"en_US": "Echo"}},
    "description": {"human": {"en_US": "Echoes its input."}, "llm": "Echo the text back."},
    "parameters": [
        {
            "name": "text",
            "type": "string",
            "required": True,
            "label": {"en_US": "Text"},
            "human_description": {"en_US": "Text to echo"},
            "form": "llm",
        }
    ],
    "extra": {"python": {"source": "tools/echo.py"}},
}


def to_yaml(value: Any) -> bytes:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True).encode()


def changed(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy with dotted keys set (``resource__memory=1`` sets resource.memory), DELETE removes."""
    result = copy.deepcopy(document)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = result
        for key in parents:
            target = target.setdefault(key, {})
        if value is DELETE:
            target.pop(last, None)
        else:
            target[last] = value
    return result


def tool_plugin(manifest: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The files of a small, valid tool plugin."""
    return {
        "manifest.yaml": to_yaml(manifest if manifest is not None else MANIFEST),
        "main.py": b"from dify_plugin import Plugin, DifyPluginEnv\n",
        "requirements.txt": b"dify_plugin>=0.4.0,<0.5.0\n",
        "provider/demo.yaml": to_yaml(TOOL_PROVIDER),
        "provider/demo.py": b"class DemoProvider: ...\n",
        "tools/echo.yaml": to_yaml(ECHO_TOOL),
        "tools/echo.py": b"class EchoTool: ...\n",
        "_assets/icon.svg": ICON,
    }


def zip_files(files: dict[str, bytes] | list[tuple[str, bytes]], *, comment: bytes = b"") -> bytes:
    items = files.items() if isinstance(files, dict) else files
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in items:
            archive.writestr(name, content)
        archive.comment = comment
    return buffer.getvalue()


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist() if not info.is_dir()}


def checksum_by_the_spec(data: bytes) -> str:
    """§6 written out again: sha256 over sha256(path) || sha256(content), paths sorted."""
    entries = zip_entries(data)
    joined = b"".join(
        hashlib.sha256(path.encode()).digest() + hashlib.sha256(entries[path]).digest() for path in sorted(entries)
    )
    return hashlib.sha256(joined).hexdigest()


def media_id_by_the_spec(name: str, content: bytes) -> str:
    """hex(sha256(bytes + filename)) + extension."""
    return hashlib.sha256(content + name.encode()).hexdigest() + Path(name).suffix
