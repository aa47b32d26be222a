"""The emulated function URL: ``POST /functions/{name}/invoke``, in front of the function's process.

Like a cloud's function endpoint it starts the function when nothing runs (cold start), passes
the call through and streams the answer back as it comes. It checks the daemon's signature
when the connector has a signing secret, refuses bodies over the platform's request limit, and
can be told to answer the next calls with an error status (``POST /v1/emulator/faults``): the
throttling and gateway errors of a real cloud, on demand, for tests.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import TYPE_CHECKING

import anyio
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ...signing import SIGNATURE_HEADER, verify
from .function import FunctionStartError, LocalFunction

if TYPE_CHECKING:
    from .provider import LocalProvider

log = logging.getLogger(__name__)

#: How long a call that broke waits for the function's exit code.
EXIT_WAIT = 1.0


def _error(status: int, message: str, error_type: str = "") -> Response:
    headers = {"x-amzn-requestid": str(uuid.uuid4())}
    if error_type:
        headers["x-amzn-errortype"] = error_type
    body = {"errorType": error_type, "errorMessage": message} if error_type else {"message": message}
    return JSONResponse(body, status_code=status, headers=headers)


class ProxiedCall:
    """Streams one call through to the function's process, releasing the function at the end."""

    def __init__(self, function: LocalFunction, base_url: str, body: bytes, session_id: str, timeout: float) -> None:
        self.function = function
        self.base_url = base_url
        self.body = body
        self.session_id = session_id
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        try:
            with anyio.move_on_after(self.timeout):
                client = self.function.client
                request = client.build_request(
                    "POST",
                    f"{self.base_url}/invoke",
                    content=self.body,
                    headers={"Content-Type": "application/json", "Dify-Plugin-Session-ID": self.session_id},
                )
                try:
                    response = await client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was delivered: retryable
                    await _error(502, f"the function did not take the call: {exc!r}")(scope, receive, send)
                    return
                except httpx.HTTPError as exc:  # delivered, then the function died: not retryable
                    await (await self._exited(exc))(scope, receive, send)
                    return
                try:
                    headers = [
                        (b"content-type", response.headers.get("content-type", "text/plain").encode()),
                        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
                    ]
                    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
                    started = True
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except httpx.HTTPError as exc:  # the function died mid-answer: say so, as a cloud error line
                    log.warning("function %s broke off a call: %r", self.function.entry.name, exc)
                    line = orjson.dumps({"errorType": "Runtime.ExitError", "errorMessage": await self._why(exc)})
                    with contextlib.suppress(Exception):
                        await send({"type": "http.response.body", "body": b"\n" + line + b"\n\n", "more_body": True})
                finally:
                    with anyio.CancelScope(shield=True):
                        await response.aclose()
            if not started:
                await _error(504, f"the function did not answer within {self.timeout:g} s")(scope, receive, send)
                return
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.function.release()

    async def _why(self, exc: Exception) -> str:
        code = await self.function.exit_code(EXIT_WAIT)
        how = f"exited with code {code}" if code is not None else f"broke the connection ({exc!r})"
        output = self.function.output()
        return f"the function {how} while handling the call" + (f"; its output ends with:\n{output}" if output else "")

    async def _exited(self, exc: Exception) -> Response:
        return _error(502, await self._why(exc), "Runtime.ExitError")


class Front:
    def __init__(self, provider: LocalProvider) -> None:
        self.provider = provider

    async def invoke(self, request: Request) -> Response | ProxiedCall:
        provider = self.provider
        options = provider.options
        function = provider.functions.get(request.path_params["name"])
        if function is None:
            return _error(404, "function not found")
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > options.max_request_bytes:
            return _error(413, f"request body is over {options.max_request_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > options.max_request_bytes:
                return _error(413, f"request body is over {options.max_request_bytes} bytes")
        if options.signing_secret and not verify(
            options.signing_secret, bytes(body), request.headers.get(SIGNATURE_HEADER)
        ):
            return _error(401, f"missing or wrong {SIGNATURE_HEADER}")
        fault = provider.take_fault(function.entry.name)
        if fault is not None:
            return _error(fault, "emulated fault")
        try:
            base_url = await function.acquire()
        except FunctionStartError as exc:
            return _error(500, str(exc), "Runtime.InitError")
        return ProxiedCall(
            function,
            base_url,
            bytes(body),
            request.headers.get("dify-plugin-session-id", ""),
            options.function_timeout,
        )

    async def faults(self, request: Request) -> Response:
        """``{"function": name, "status": 502, "times": 2}``: the next ``times`` calls get ``status``."""
        try:
            body = orjson.loads(await request.body())
            name, status, times = str(body["function"]), int(body["status"]), int(body.get("times", 1))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"want {{function, status, times}}: {exc}"}, status_code=400)
        if name not in self.provider.functions:
            return JSONResponse({"error": f"no function {name!r}"}, status_code=404)
        self.provider.faults[name] = [status] * max(0, times)
        return JSONResponse({"function": name, "pending": self.provider.faults[name]})

    async def functions(self, request: Request) -> Response:
        return JSONResponse(self.provider.describe())
