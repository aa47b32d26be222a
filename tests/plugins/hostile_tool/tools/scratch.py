import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage


class ScratchTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        with tempfile.NamedTemporaryFile("w+", suffix=".txt") as handle:
            handle.write("temporary")
            handle.flush()
            handle.seek(0)
            temporary = handle.read()
        cache = Path.home() / ".cache" / "hostile_tool"
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "state.txt").write_text("home")
        yield self.create_json_message(
            {
                "tmp": temporary,
                "home": (cache / "state.txt").read_text(),
                "tmpdir": tempfile.gettempdir(),
                "cwd": os.getcwd(),
            }
        )
