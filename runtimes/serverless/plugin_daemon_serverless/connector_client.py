"""The daemon's side of the SRI: ping the connector, look a function up, deploy a package."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import httpx
import orjson
from plugin_daemon.protocol.framing import LineReader, OversizeLine

from .httpstream import ResponseByteStream
from .sri import FAILED, SUCCESS, FunctionInfo, LaunchEvent, package_filename, parse_run_message

log = logging.getLogger(__name__)

#: Longest line of a launch stream (build logs can be chatty).
LAUNCH_LINE_MAX = 1024 * 1024
#: Deadline of the small SRI calls (ping, lookup).
CALL_TIMEOUT = 30.0
#: How much of an error body is quoted.
ERROR_BODY_KEEP = 2000


class ConnectorError(Exception):
    """The connector refused, failed or could not be reached; the message says which and why."""


class ConnectorClient:
    def __init__(self, base_url: str, api_key: str, client: httpx.AsyncClient, *, launch_timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": api_key}
        self.client = client
        self.launch_timeout = launch_timeout

    async def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        url = f"{self.base_url}{path}"
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                response = await self.client.request(method, url, headers=self.headers, **kwargs)  # type: ignore[arg-type]
        except (httpx.HTTPError, TimeoutError) as exc:
            raise ConnectorError(f"serverless connector {self.base_url} unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise ConnectorError(
                f"serverless connector answered {method} {path} with HTTP {response.status_code}: "
                f"{response.text[:ERROR_BODY_KEEP]}"
            )
        return response

    async def ping(self) -> None:
        response = await self._request("POST", "/ping")
        try:
            answer = response.json()
        except ValueError:
            answer = response.text
        if answer != "pong":
            raise ConnectorError(f'serverless connector answered /ping with {response.text[:200]!r}, not "pong"')

    async def find(self, identifier: str) -> FunctionInfo | None:
        """The function deployed for ``identifier``, or None."""
        response = await self._request("GET", "/v1/runner/instances", params={"filename": package_filename(identifier)})
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError as exc:
            raise ConnectorError(f"serverless connector sent unreadable instances: {exc}") from exc
        lowered = {str(key).lower(): value for key, value in body.items()} if isinstance(body, dict) else {}
        if lowered.get("error"):
            raise ConnectorError(f"serverless connector failed to list instances: {lowered['error']}")
        items = [FunctionInfo.from_item(item) for item in lowered.get("items") or [] if isinstance(item, dict)]
        found = [item for item in items if item.endpoint]
        return found[0] if found else None

    async def launch(
        self, identifier: str, package: bytes, *, verified: bool, progress: Callable[[str], None]
    ) -> FunctionInfo:
        """Deploy ``package`` and follow the stages until ``end``; the function it reports."""
        filename = package_filename(identifier)
        files = {"context": (filename, package, "application/octet-stream")}
        data = {
            "verified": "true" if verified else "false",
            "metadata": orjson.dumps({"plugin_unique_identifier": identifier}).decode(),
        }
        timeout = httpx.Timeout(self.launch_timeout, connect=CALL_TIMEOUT)
        function: FunctionInfo | None = None
        try:
            with anyio.fail_after(self.launch_timeout):
                async with self.client.stream(
                    "POST",
                    f"{self.base_url}/v1/launch",
                    headers=self.headers,
                    files=files,
                    data=data,
                    timeout=timeout,
                ) as response:
                    if response.status_code != 200:
                        body = (await response.aread())[:ERROR_BODY_KEEP].decode("utf-8", "replace")
                        raise ConnectorError(
                            f"serverless connector refused the launch (HTTP {response.status_code}): {body}"
                        )
                    async for line in LineReader(ResponseByteStream(response), LAUNCH_LINE_MAX):
                        if isinstance(line, OversizeLine):
                            continue
                        event = LaunchEvent.parse(line)
                        if event is None:
                            continue
                        if event.state == FAILED:
                            raise ConnectorError(f"deployment failed at stage {event.stage}: {event.message}")
                        if event.message:
                            progress(f"{event.stage}: {event.message}")
                        if event.stage == "run" and event.state == SUCCESS:
                            fields = parse_run_message(event.message)
                            if not fields.get("endpoint"):
                                raise ConnectorError(f"the connector reported no function URL: {event.message!r}")
                            function = FunctionInfo(
                                id=fields.get("id", ""), name=fields.get("name", ""), endpoint=fields["endpoint"]
                            )
                        if event.stage == "end":
                            break
        except TimeoutError:
            raise ConnectorError(
                f"deployment of {identifier} did not finish within {self.launch_timeout:g} s "
                "(DIFY_PLUGIN_SERVERLESS_CONNECTOR_LAUNCH_TIMEOUT)"
            ) from None
        except httpx.HTTPError as exc:
            raise ConnectorError(f"deployment of {identifier} broke off: {exc!r}") from exc
        if function is None:
            raise ConnectorError(f"the connector ended the deployment of {identifier} without a function URL")
        return function
