from collections.abc import Generator
from typing import Any

from dify_plugin import Tool
from dify_plugin.entities.model.llm import LLMModelConfig
from dify_plugin.entities.model.message import UserPromptMessage
from dify_plugin.entities.tool import ToolInvokeMessage


class LLMTool(Tool):
    """Backwards-invokes an LLM through Dify and streams each chunk's content as a text message."""

    def _invoke(self, tool_parameters: dict[str, Any]) -> Generator[ToolInvokeMessage, None, None]:
        chunks = self.session.model.llm.invoke(
            model_config=LLMModelConfig(
                provider=str(tool_parameters.get("provider", "")),
                model=str(tool_parameters.get("model", "")),
                mode="chat",
                completion_params={},
            ),
            prompt_messages=[UserPromptMessage(content=str(tool_parameters.get("query", "")))],
            stream=True,
        )
        for chunk in chunks:
            content = chunk.delta.message.content
            if isinstance(content, str) and content:
                yield self.create_text_message(content)
