import json
import socket
from collections.abc import Generator, Iterator, Mapping
from typing import Any

import httpx
from dify_plugin import LargeLanguageModel
from dify_plugin.entities import I18nObject
from dify_plugin.entities.model import AIModelEntity, FetchFrom, ModelPropertyKey, ModelType
from dify_plugin.entities.model.llm import LLMMode, LLMResult, LLMResultChunk, LLMResultChunkDelta
from dify_plugin.entities.model.message import (
    AssistantPromptMessage,
    PromptMessage,
    PromptMessageContentType,
    PromptMessageTool,
)
from dify_plugin.errors.model import (
    CredentialsValidateFailedError,
    InvokeAuthorizationError,
    InvokeBadRequestError,
    InvokeConnectionError,
    InvokeError,
    InvokeRateLimitError,
    InvokeServerUnavailableError,
)

TIMEOUT = httpx.Timeout(120.0, connect=10.0)


def _client(timeout: Any) -> httpx.Client:
    """An upstream client whose small writes go out at once: with Nagle's algorithm on, the request
    body would wait for the server's (delayed, up to 40 ms) acknowledgement of the headers."""
    nodelay = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
    return httpx.Client(timeout=timeout, transport=httpx.HTTPTransport(socket_options=nodelay))


def _text_of(message: PromptMessage) -> str:
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.data) for part in content if part.type == PromptMessageContentType.TEXT)


def _words(messages: list[PromptMessage]) -> int:
    return sum(len(_text_of(m).split()) for m in messages)


def _headers(credentials: Mapping[str, Any]) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if credentials.get("api_key"):
        headers["Authorization"] = f"Bearer {credentials['api_key']}"
    return headers


def _base_url(credentials: Mapping[str, Any]) -> str:
    url = str(credentials.get("endpoint_url") or "").rstrip("/")
    if not url:
        raise InvokeBadRequestError("credentials.endpoint_url is required")
    return url


def _raise_for_status(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    response.read()
    detail = f"upstream answered {response.status_code}: {response.text[:500]}"
    if response.status_code in (401, 403):
        raise InvokeAuthorizationError(detail)
    if response.status_code == 429:
        raise InvokeRateLimitError(detail)
    if response.status_code >= 500:
        raise InvokeServerUnavailableError(detail)
    raise InvokeBadRequestError(detail)


class MockLargeLanguageModel(LargeLanguageModel):
    """Chat completions against an OpenAI-compatible endpoint, streamed chunk by chunk."""

    def _invoke(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        model_parameters: dict,
        tools: list[PromptMessageTool] | None = None,
        stop: list[str] | None = None,
        stream: bool = True,
        user: str | None = None,
    ) -> LLMResult | Generator[LLMResultChunk, None, None]:
        body: dict[str, Any] = {
            "model": credentials.get("endpoint_model_name") or model,
            "messages": [{"role": m.role.value, "content": _text_of(m)} for m in prompt_messages],
            "stream": stream,
            **model_parameters,
        }
        if stop:
            body["stop"] = stop
        if user:
            body["user"] = user
        url = _base_url(credentials) + "/chat/completions"
        if stream:
            return self._stream(model, credentials, prompt_messages, url, body)
        return self._blocking(model, credentials, prompt_messages, url, body)

    def _blocking(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        url: str,
        body: dict[str, Any],
    ) -> LLMResult:
        with _client(TIMEOUT) as client:
            response = client.post(url, json=body, headers=_headers(credentials))
            _raise_for_status(response)
            payload = response.json()
        content = payload["choices"][0]["message"].get("content") or ""
        usage = payload.get("usage") or {}
        return LLMResult(
            model=model,
            prompt_messages=[],
            message=AssistantPromptMessage(content=content),
            usage=self._calc_response_usage(
                model,
                credentials,
                int(usage.get("prompt_tokens", _words(prompt_messages))),
                int(usage.get("completion_tokens", len(content.split()))),
            ),
        )

    def _stream(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        url: str,
        body: dict[str, Any],
    ) -> Generator[LLMResultChunk, None, None]:
        try:
            with (
                _client(TIMEOUT) as client,
                client.stream("POST", url, json=body, headers=_headers(credentials)) as response,
            ):
                _raise_for_status(response)
                yield from self._chunks(response, model, credentials, prompt_messages)
        except httpx.HTTPError as exc:  # raised while iterating: not seen by LargeLanguageModel.invoke
            raise self._transform_invoke_error(exc) from exc

    def _chunks(
        self,
        response: httpx.Response,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
    ) -> Generator[LLMResultChunk, None, None]:
        """One LLMResultChunk per upstream chunk; the last one carries usage and finish_reason."""
        index = 0
        completion_words = 0
        finish_reason: str | None = None
        usage: dict[str, Any] | None = None

        def final_chunk(content: str) -> LLMResultChunk:
            prompt_tokens = int((usage or {}).get("prompt_tokens", _words(prompt_messages)))
            completion_tokens = int((usage or {}).get("completion_tokens", completion_words))
            return LLMResultChunk(
                model=model,
                prompt_messages=[],
                delta=LLMResultChunkDelta(
                    index=index,
                    message=AssistantPromptMessage(content=content),
                    usage=self._calc_response_usage(model, credentials, prompt_tokens, completion_tokens),
                    finish_reason=finish_reason or "stop",
                ),
            )

        for event in _sse_events(response.iter_lines()):
            usage = event.get("usage") or usage
            choices = event.get("choices") or []
            if not choices:
                continue  # a usage-only chunk (OpenAI's stream_options.include_usage)
            choice = choices[0]
            content = (choice.get("delta") or {}).get("content") or ""
            completion_words += len(content.split())
            finish_reason = choice.get("finish_reason") or finish_reason
            if finish_reason and usage is not None:
                yield final_chunk(content)
                return
            if content or not finish_reason:
                yield self._content_chunk(model, index, content)
                index += 1
        # the stream ended without a chunk carrying both finish_reason and usage
        yield final_chunk("")

    @staticmethod
    def _content_chunk(model: str, index: int, content: str) -> LLMResultChunk:
        return LLMResultChunk(
            model=model,
            prompt_messages=[],
            delta=LLMResultChunkDelta(index=index, message=AssistantPromptMessage(content=content)),
        )

    def get_num_tokens(
        self,
        model: str,
        credentials: dict,
        prompt_messages: list[PromptMessage],
        tools: list[PromptMessageTool] | None = None,
    ) -> int:
        return _words(prompt_messages)

    def validate_credentials(self, model: str, credentials: Mapping) -> None:
        try:
            url = _base_url(credentials) + "/models"
            with _client(httpx.Timeout(10.0)) as client:
                response = client.get(url, headers=_headers(credentials))
        except (httpx.HTTPError, InvokeError) as exc:
            raise CredentialsValidateFailedError(f"endpoint does not answer: {exc}") from exc
        if response.status_code != 200:
            raise CredentialsValidateFailedError(f"endpoint answered {response.status_code} on {url}")

    def get_customizable_model_schema(self, model: str, credentials: Mapping) -> AIModelEntity | None:
        return AIModelEntity(
            model=model,
            label=I18nObject(en_US=model),
            model_type=ModelType.LLM,
            fetch_from=FetchFrom.CUSTOMIZABLE_MODEL,
            model_properties={ModelPropertyKey.MODE: LLMMode.CHAT.value, ModelPropertyKey.CONTEXT_SIZE: 4096},
            parameter_rules=[],
        )

    @property
    def _invoke_error_mapping(self) -> dict[type[InvokeError], list[type[Exception]]]:
        return {
            InvokeConnectionError: [httpx.ConnectError, httpx.TimeoutException, httpx.NetworkError],
            InvokeServerUnavailableError: [httpx.RemoteProtocolError],
            InvokeBadRequestError: [httpx.HTTPError, ValueError, KeyError],
        }


def _sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """JSON payloads of ``data:`` lines until ``data: [DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        if data:
            yield json.loads(data)
