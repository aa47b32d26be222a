from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class HaltTool(Tool):
    """A stray breakpoint() left in a tool: without a debugger attached it must not stop the plugin."""

    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        breakpoint()
        yield self.create_text_message("after breakpoint")
