import json
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class CallTool(Tool):
    """Backwards-invokes a builtin tool through Dify and re-yields every message it returns."""

    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        raw = tool_parameters.get("parameters") or {}
        parameters = json.loads(raw) if isinstance(raw, str) else dict(raw)
        yield from self.session.tool.invoke_builtin_tool(
            provider=str(tool_parameters.get("provider", "")),
            tool_name=str(tool_parameters.get("tool_name", "")),
            parameters=parameters,
        )
