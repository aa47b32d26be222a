import time
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class TicksTool(Tool):
    """Yields text "0", "1", ... (`count` messages), `interval` seconds apart: a long streamed answer."""

    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        interval = float(tool_parameters.get("interval") or 0)
        for number in range(int(tool_parameters.get("count") or 1)):
            if number and interval:
                time.sleep(interval)  # patched by gevent: other sessions keep running
            yield self.create_text_message(str(number))
