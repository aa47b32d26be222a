"""An httpx response body as an anyio byte stream, so the shared bounded line reader can frame it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
from anyio.abc import ByteReceiveStream


class ResponseByteStream(ByteReceiveStream):
    """Yields the body's bytes as they arrive (no buffering of the whole answer)."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks: AsyncIterator[bytes] = response.aiter_raw()
        self._pending = b""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while not self._pending:
            try:
                self._pending = await self._chunks.__anext__()
            except StopAsyncIteration:
                raise anyio.EndOfStream from None
        data, self._pending = self._pending[:max_bytes], self._pending[max_bytes:]
        return data

    async def aclose(self) -> None:
        return None
