import time
from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class SleepTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        # time.sleep is patched by gevent (imported by dify_plugin): other sessions keep running.
        time.sleep(float(tool_parameters.get("seconds") or 0))
        yield self.create_text_message("slept")
