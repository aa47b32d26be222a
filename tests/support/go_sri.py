"""The Go daemon's side of the SRI, modelled call by call, and a connector written to it.

``GoSRIClient`` calls a connector the way the Go daemon's ``internal/core/serverless_connector``
package does, and reads the answers the way it reads them:

- ``POST /ping`` with no body, raw ``Authorization``; the body is JSON-decoded into a string and
  must be ``"pong"``; the status is not looked at.
- ``GET /v1/runner/instances?filename=...``; the body is JSON-decoded into ``{error, Items}``
  (field names matched case-insensitively, as Go's ``encoding/json`` does); a non-empty
  ``error`` fails, no items means "not found", and the first item is the function.
- ``POST /v1/launch``, multipart: the file part ``context`` first, then ``verified`` and
  ``metadata``; anything but HTTP 200 fails; the answer is read line by line (``data:`` cut
  off, ``event:`` lines skipped, lines that are not JSON skipped) and each chunk becomes one of
  Go's launch events: a ``failed`` state → ``error``; ``start``/``build`` → ``info``;
  ``run``/``success`` → ``function`` and ``function_url`` (its message parsed as strict
  ``key=value`` pairs split on commas); ``end`` → ``done``.
- the function: ``POST {endpoint}/invoke?action=...`` with ``Content-Type: application/json``,
  ``Accept: text/event-stream`` and ``Dify-Plugin-Session-ID``, no signature; the answer is
  read line by line, a JSON line with ``errorType`` is a cloud error, every other line a
  ``{session_id, event, data}`` frame.

``GoStyleConnector`` is the other direction: a connector that answers exactly what that client
expects and nothing more (``/ping`` only by POST, ``Items`` capitalised and ``null`` when empty,
launch lines written as ``data:{...}`` with ``event:`` lines between them), recording what it
was sent. Both are stand-ins for code outside this project.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

#: Go's ``bufio.Scanner`` limit for launch lines (``maxChunkSize`` default: 30 MiB)
LAUNCH_LINE_MAX = 30 * 1024 * 1024
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class GoClientError(Exception):
    """What the Go daemon would have reported as an error."""


def go_field(obj: Any, name: str) -> Any:
    """A JSON object's field as Go's ``encoding/json`` finds it: exact name first, then any case."""
    if not isinstance(obj, dict):
        return None
    if name in obj:
        return obj[name]
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == name.lower():
            return value
    return None


def parse_comma_values(message: str) -> dict[str, str]:
    """Go's ``parser.ParserCommaSeparatedValues``: every comma-separated part must be one ``k=v``."""
    values: dict[str, str] = {}
    if not message:
        return values
    for pair in message.split(","):
        parts = pair.split("=")
        if len(parts) != 2:
            raise GoClientError(f"invalid key-value pair: {pair}")
        values[parts[0].strip()] = parts[1].strip()
    return values


@dataclass
class GoLaunchEvent:
    event: str  # error | info | function | function_url | done
    message: str


@dataclass
class GoInvokeResult:
    messages: list[dict[str, Any]] = field(default_factory=list)  # session messages: {type, data}
    errors: list[str] = field(default_factory=list)


class GoSRIClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": api_key, "traceparent": TRACEPARENT}
        self.client = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def ping(self) -> None:
        response = self.client.post(f"{self.base_url}/ping", headers=self.headers)
        try:
            answer = json.loads(response.content)
        except ValueError as exc:
            raise GoClientError(f"/ping: {exc}") from exc
        if answer != "pong":
            raise GoClientError(f"unexpected response from serverless connector: {answer}")

    def fetch_function(self, filename: str) -> dict[str, str] | None:
        # Go's url.Values.Encode escapes '@' as %40
        url = f"{self.base_url}/v1/runner/instances?filename={quote(filename, safe='')}"
        body = json.loads(self.client.get(url, headers=self.headers).content)
        if go_field(body, "error"):
            raise GoClientError(f"unexpected response from plugin controller: {go_field(body, 'error')}")
        items = go_field(body, "Items") or []
        if not items:
            return None
        first = items[0]
        return {
            "function_name": str(go_field(first, "Name") or ""),
            "function_drn": str(go_field(first, "ResourceName") or ""),
            "function_url": str(go_field(first, "Endpoint") or ""),
        }

    def setup_function(self, filename: str, package: bytes, identifier: str, *, verified: bool) -> list[GoLaunchEvent]:
        files = {"context": (filename, package, "application/octet-stream")}
        data = {
            "verified": "true" if verified else "false",
            "metadata": json.dumps({"plugin_unique_identifier": identifier}),
        }
        events: list[GoLaunchEvent] = []
        with self.client.stream(
            "POST", f"{self.base_url}/v1/launch", headers=self.headers, files=files, data=data
        ) as r:
            if r.status_code != 200:
                raise GoClientError(f"request failed with status code: {r.status_code} and respond with: {r.read()!r}")
            for raw in r.iter_lines():
                line = raw.encode()
                if len(line) > LAUNCH_LINE_MAX:
                    raise GoClientError("line is too long")
                if not line:
                    continue
                if line.startswith(b"data:"):
                    line = line[5:]
                if line.startswith(b"event:"):
                    continue
                try:
                    chunk = json.loads(line.strip())
                except ValueError:
                    continue  # Go logs "stream data not match" and goes on
                if not isinstance(chunk, dict):
                    continue
                events.extend(self._launch_events(chunk))
        return events

    @staticmethod
    def _launch_events(chunk: dict[str, Any]) -> list[GoLaunchEvent]:
        stage, state = go_field(chunk, "Stage"), go_field(chunk, "State")
        message = str(go_field(chunk, "Message") or "")
        if state == "failed":
            return [GoLaunchEvent("error", message)]
        if stage in ("start", "build"):
            return [GoLaunchEvent("info", "Building plugin...")]
        if stage == "run":
            if state != "success":
                return [GoLaunchEvent("info", "Launching plugin...")]
            try:
                values = parse_comma_values(message)
            except GoClientError as exc:
                return [GoLaunchEvent("error", str(exc))]
            return [
                GoLaunchEvent("function", values.get("name", "")),
                GoLaunchEvent("function_url", values.get("endpoint", "")),
            ]
        if stage == "end":
            return [GoLaunchEvent("done", "Plugin launched")]
        return []

    def invoke(self, endpoint: str, session_id: str, action: str, body: bytes) -> GoInvokeResult:
        url = endpoint.rstrip("/") + "/invoke?action=" + action
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Dify-Plugin-Session-ID": session_id,
        }
        result = GoInvokeResult()
        with self.client.stream("POST", url, headers=headers, content=body) as response:
            if not 200 <= response.status_code < 300 or response.headers.get("x-amzn-ErrorType"):
                result.errors.append(f"HTTP {response.status_code}: {response.read()[:4096]!r}")
                return result
            for raw in response.iter_lines():
                if not raw:
                    continue
                try:
                    line = json.loads(raw)
                except ValueError as exc:
                    result.errors.append(f"{exc} original response: {raw[:1024]}")
                    continue
                if go_field(line, "errorType"):
                    result.errors.append(raw)
                    break
                event = go_field(line, "event")
                if event == "session":
                    message = go_field(line, "data")
                    if not isinstance(message, dict) or not go_field(message, "type"):
                        result.errors.append(f"failed to parse session message {raw}")
                        continue
                    if go_field(message, "type") == "end":
                        result.messages.append(message)
                        break
                    result.messages.append(message)
                elif event == "error":
                    result.errors.append(json.dumps(go_field(line, "data")))
        return result


@dataclass
class GoStyleFunction:
    name: str
    endpoint: str
    resource_name: str
    state: str = "Running"


class GoStyleConnector:
    """A connector written to the Go daemon's client; ``fail_build`` names packages whose build fails."""

    def __init__(self, api_key: str, *, function_base_url: str = "http://functions.invalid") -> None:
        self.api_key = api_key
        self.function_base_url = function_base_url
        self.functions: dict[str, GoStyleFunction] = {}
        self.launches: list[dict[str, Any]] = []
        self.pings: list[str] = []
        self.fail_build: set[str] = set()
        self._lock = threading.Lock()

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/ping", self.ping, methods=["POST"]),
                Route("/v1/runner/instances", self.instances, methods=["GET"]),
                Route("/v1/launch", self.launch, methods=["POST"]),
            ]
        )

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("authorization") == self.api_key

    async def ping(self, request: Request) -> Response:
        self.pings.append(request.method)
        if not self._authorised(request):
            return JSONResponse("unauthorized", status_code=401)
        return Response('"pong"', media_type="application/json")

    async def instances(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"error": "unauthorized", "Items": None}, status_code=401)
        filename = request.query_params.get("filename", "")
        with self._lock:
            function = self.functions.get(filename)
        items = None  # Go encodes an empty slice it never allocated as null
        if function is not None:
            items = [
                {
                    "ID": function.name + "-id",
                    "Name": function.name,
                    "Endpoint": function.endpoint,
                    "ResourceName": function.resource_name,
                    "Status": {"State": function.state},
                }
            ]
        return JSONResponse({"error": "", "Items": items})

    async def launch(self, request: Request) -> Response:
        if not self._authorised(request):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        async with request.form() as form:
            upload = form.get("context")
            assert isinstance(upload, UploadFile)
            filename = upload.filename or ""
            record = {
                "filename": filename,
                "size": len(await upload.read()),
                "verified": form.get("verified"),
                "metadata": json.loads(str(form.get("metadata") or "{}")),
                "field_order": list(form.keys()),
            }
        self.launches.append(record)
        name = "fn-" + filename.split("@")[1]
        failed = filename in self.fail_build

        def line(stage: str, state: str, message: str) -> bytes:
            chunk = {"Stage": stage, "Obj": filename, "State": state, "Message": message}
            return b"event: launch\ndata:" + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

        async def lines():  # type: ignore[no-untyped-def]
            yield line("healthz", "running", "checking")
            yield line("start", "running", "starting")
            if failed:
                yield line("build", "failed", "pip install failed: no matching distribution")
                return
            yield line("build", "success", "built")
            yield line("run", "running", "deploying")
            endpoint = f"{self.function_base_url}/{name}"
            with self._lock:
                self.functions[filename] = GoStyleFunction(name, endpoint, f"arn:fake:function:{name}")
            yield line("run", "success", f"endpoint={endpoint},name={name},id={name}-id")
            yield line("end", "success", "done")

        return StreamingResponse(lines(), media_type="text/event-stream")
