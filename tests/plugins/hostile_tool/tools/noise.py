import sys
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage

LINE = "noise " * 20 + "\n"


class NoiseTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        size = int(float(tool_parameters.get("mb") or 1) * 1024 * 1024)
        block = LINE * (65536 // len(LINE))
        written = 0
        while written < size:
            sys.stderr.write(block)
            written += len(block)
        sys.stderr.flush()
        yield self.create_json_message({"written": written})
