"""The Dify inner API, as the daemon calls it for plugins: one pooled httpx client.

JSON answers are ``{"data": ..., "error": ""}``; streamed answers are length-prefixed frames
whose payloads have the same shape. A non-empty ``error`` fails the call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from plugin_daemon.backwards.frames import FrameDecoder, FrameError
from plugin_daemon.config import Settings


class DifyCallError(Exception):
    pass


def timeout_message(seconds: float) -> str:
    return f"Dify did not answer within {seconds:g} s (DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT)"


class DifyInnerAPI:
    def __init__(self, settings: Settings) -> None:
        write = settings.DIFY_BACKWARDS_INVOCATION_WRITE_TIMEOUT / 1000
        self.read_deadline = settings.DIFY_BACKWARDS_INVOCATION_READ_TIMEOUT / 1000
        self.client = httpx.AsyncClient(
            base_url=settings.DIFY_INNER_API_URL.rstrip("/") + "/inner/api/",
            headers={"X-Inner-Api-Key": settings.DIFY_INNER_API_KEY},
            timeout=httpx.Timeout(connect=write, write=write, read=self.read_deadline, pool=write),
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    @staticmethod
    def _unwrap(payload: bytes) -> Any:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DifyCallError(f"Dify answered something that is not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise DifyCallError("Dify answered JSON that is not an object")
        if body.get("error"):
            raise DifyCallError(f"request failed: {body['error']}")
        return body.get("data")

    async def call(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self.client.post(path, content=orjson.dumps(body), headers=_JSON)
        except httpx.TimeoutException:
            raise DifyCallError(timeout_message(self.read_deadline)) from None
        except httpx.HTTPError as exc:
            raise DifyCallError(f"request to Dify failed: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise _status_error(response.status_code, response.content)
        return self._unwrap(response.content)

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        decoder = FrameDecoder()
        try:
            async with self.client.stream("POST", path, content=orjson.dumps(body), headers=_JSON) as response:
                if response.status_code != 200:
                    raise _status_error(response.status_code, await _head_of(response))
                async for chunk in response.aiter_raw():
                    for payload in decoder.feed(chunk):
                        yield self._unwrap(payload)
                decoder.close()
        except FrameError as exc:
            raise DifyCallError(str(exc)) from None
        except httpx.TimeoutException:
            raise DifyCallError(timeout_message(self.read_deadline)) from None
        except httpx.HTTPError as exc:
            raise DifyCallError(f"request to Dify failed: {type(exc).__name__}: {exc}") from None


_JSON = {"Content-Type": "application/json"}
#: How much of a failed answer's body goes into the error the plugin gets.
ERROR_BODY_CHARS = 1000


async def _head_of(response: httpx.Response) -> bytes:
    """The first bytes of a streamed answer's body (what explains a failure; the rest is not read)."""
    head = b""
    async for chunk in response.aiter_raw():
        head += chunk
        if len(head) >= ERROR_BODY_CHARS:
            break
    return head


def _status_error(status: int, body: bytes) -> DifyCallError:
    """As the Go daemon words it: Dify's own explanation (its 4xx JSON, say) is kept."""
    text = body[:ERROR_BODY_CHARS].decode("utf-8", "replace").strip()
    return DifyCallError(f"request failed with status code: {status}" + (f" and respond with: {text}" if text else ""))
