"""Which backwards invocations a plugin's manifest allows (``resource.permission``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Check = Callable[[dict[str, Any]], bool]


def _section(permission: dict[str, Any], name: str) -> dict[str, Any]:
    value = permission.get(name)
    return value if isinstance(value, dict) else {}


def _enabled(name: str) -> Check:
    return lambda permission: bool(_section(permission, name).get("enabled"))


def _model(kind: str) -> Check:
    def check(permission: dict[str, Any]) -> bool:
        model = _section(permission, "model")
        return bool(model.get("enabled")) and bool(model.get(kind))

    return check


def _always(permission: dict[str, Any]) -> bool:
    return True


#: invoke type -> (check, the thing to enable)
RULES: dict[str, tuple[Check, str]] = {
    "tool": (_enabled("tool"), "tool"),
    "llm": (_model("llm"), "llm"),
    "llm_structured_output": (_model("llm"), "llm"),
    "system_summary": (_model("llm"), "llm"),
    "text_embedding": (_model("text_embedding"), "text-embedding"),
    "multimodal_embedding": (_model("text_embedding"), "text-embedding"),
    "rerank": (_model("rerank"), "rerank"),
    "multimodal_rerank": (_model("rerank"), "rerank"),
    "tts": (_model("tts"), "tts"),
    "speech2text": (_model("speech2text"), "speech2text"),
    "moderation": (_model("moderation"), "moderation"),
    "node_parameter_extractor": (_enabled("node"), "node"),
    "node_question_classifier": (_enabled("node"), "node"),
    "app": (_enabled("app"), "app"),
    "fetch_app": (_enabled("app"), "app"),
    "storage": (_enabled("storage"), "storage"),
    "upload_file": (_always, "storage"),
}


def denial(declaration: dict[str, Any], invoke_type: str) -> str | None:
    """None when allowed, else the message the plugin gets (the Go daemon's words)."""
    rule = RULES.get(invoke_type)
    if rule is None:
        return f"unsupported invoke type: {invoke_type}"
    check, thing = rule
    permission = (declaration.get("resource") or {}).get("permission") or {}
    if check(permission if isinstance(permission, dict) else {}):
        return None
    return f"permission denied, you need to enable {thing} access in plugin manifest"
