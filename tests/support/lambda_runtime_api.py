"""A stand-in for AWS Lambda's Runtime API on loopback, to run a function's runtime loop here.

``/2018-06-01/runtime/invocation/next`` hands out the events given to :meth:`invoke` (with a
``Lambda-Runtime-Aws-Request-Id``); ``/invocation/{id}/response`` records what the function
sends, chunk by chunk with the time each arrived, so a test can tell a streamed answer from a
buffered one; ``/init/error`` and ``/invocation/{id}/error`` are recorded too.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support.daemon_server import AppServer

PREFIX = "/2018-06-01/runtime"


@dataclass
class Answer:
    headers: dict[str, str]
    chunks: list[tuple[float, bytes]] = field(default_factory=list)  # (monotonic arrival, bytes)
    done: bool = False

    @property
    def body(self) -> bytes:
        return b"".join(chunk for _, chunk in self.chunks)


class LambdaRuntimeAPI(AppServer):
    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.answers: dict[str, Answer] = {}
        self.errors: list[dict[str, Any]] = []
        self.closed = False
        self._changed = threading.Condition()
        app = Starlette(
            routes=[
                Route(f"{PREFIX}/invocation/next", self._next, methods=["GET"]),
                Route(f"{PREFIX}/invocation/{{request_id}}/response", self._response, methods=["POST"]),
                Route(f"{PREFIX}/invocation/{{request_id}}/error", self._error, methods=["POST"]),
                Route(f"{PREFIX}/init/error", self._error, methods=["POST"]),
            ]
        )
        super().__init__(app, "Lambda Runtime API", {})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def invoke(self, event: dict[str, Any]) -> str:
        request_id = str(uuid.uuid4())
        self.events.put((request_id, event))
        return request_id

    def answer(self, request_id: str, timeout: float) -> Answer:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (request_id in self.answers and self.answers[request_id].done):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no complete answer to {request_id} within {timeout} s: {self.errors}")
                self._changed.wait(left)
            return self.answers[request_id]

    def stop(self) -> None:
        self.closed = True
        super().stop()

    async def _next(self, request: Request) -> Response:
        def take() -> tuple[str, dict[str, Any]] | None:
            while not self.closed:
                try:
                    return self.events.get(timeout=0.2)
                except queue.Empty:
                    continue
            return None

        taken = await anyio.to_thread.run_sync(take)
        if taken is None:
            return Response(status_code=503)
        request_id, event = taken
        return Response(
            orjson.dumps(event), media_type="application/json", headers={"Lambda-Runtime-Aws-Request-Id": request_id}
        )

    async def _response(self, request: Request) -> Response:
        answer = Answer(headers={k.lower(): v for k, v in request.headers.items()})
        request_id = request.path_params["request_id"]
        with self._changed:
            self.answers[request_id] = answer
        async for chunk in request.stream():
            if chunk:
                answer.chunks.append((time.monotonic(), chunk))
        with self._changed:
            answer.done = True
            self._changed.notify_all()
        return Response(status_code=202)

    async def _error(self, request: Request) -> Response:
        with self._changed:
            self.errors.append({"path": request.url.path, "body": (await request.body()).decode(errors="replace")})
            self._changed.notify_all()
        return Response(status_code=202)
