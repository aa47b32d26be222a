from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class MultiTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        yield self.create_text_message("a")
        yield self.create_json_message({"k": 1})
        yield self.create_variable_message("v", 42)
        yield self.create_stream_variable_message("s", "chunk")
