import time
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage

PAGE = 4096


class HogTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        size = int(float(tool_parameters.get("mb") or 0) * 1024 * 1024)
        buf = bytearray(size)
        # Write one byte per page so the pages are really resident (calloc'd pages are lazy).
        buf[::PAGE] = b"\x01" * len(range(0, size, PAGE))
        time.sleep(float(tool_parameters.get("seconds") or 0))
        del buf
        yield self.create_text_message("done")
