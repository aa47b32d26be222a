from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class StorageTool(Tool):
    """op=set|get|exist|delete on self.session.storage; errors propagate to the caller."""

    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        op = str(tool_parameters.get("op", ""))
        key = str(tool_parameters.get("key", ""))
        storage = self.session.storage
        if op == "set":
            storage.set(key, str(tool_parameters.get("value") or "").encode("utf-8"))
            yield self.create_json_message({"ok": True})
        elif op == "get":
            yield self.create_json_message({"value": storage.get(key).decode("utf-8")})
        elif op == "exist":
            yield self.create_json_message({"exists": bool(storage.exist(key))})
        elif op == "delete":
            storage.delete(key)
            yield self.create_json_message({"ok": True})
        else:
            raise ValueError(f"unknown storage op: {op!r}")
