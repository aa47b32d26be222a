from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.tool import ToolInvokeMessage

PATTERN = b"0123456789"


def blob_of(size: int) -> bytes:
    """Deterministic content: b"0123456789" repeated, cut to `size` bytes."""
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


class BlobTool(Tool):
    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        size = int(tool_parameters.get("size") or 5)
        yield self.create_blob_message(blob_of(size), meta={"mime_type": "text/plain"})
