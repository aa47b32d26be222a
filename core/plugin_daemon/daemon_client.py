"""Talking to a running daemon from the command line: where it is, which key, which tenant.

Every management command (``list``, ``status``, ``invoke``, ...) goes through :class:`DaemonClient`.
Its failures are :class:`DaemonClientError`, one line each (the CLI prints it, never a traceback):
a daemon that cannot be reached, a key it refuses (and where the key was looked for), or the
message of an envelope that is not a success.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from plugin_daemon.config import SettingsError, load_settings
from plugin_daemon.hardening import KEY_FILE

URL_ENV = "PLUGIN_DAEMON_URL"
KEY_ENV = "PLUGIN_DAEMON_KEY"
TENANT_ENV = "PLUGIN_DAEMON_TENANT"
#: Seconds to wait for an answer that is not a stream (streams wait as long as the daemon talks).
TIMEOUT = 120.0


class DaemonClientError(Exception):
    """A failure the CLI shows as one line."""


@dataclass
class Connection:
    """Where the daemon is, the key to show it, and where that key came from (or was looked for)."""

    url: str
    key: str
    key_source: str
    looked_in: list[str] = field(default_factory=list)
    tenant: str | None = None

    @classmethod
    def resolve(cls, url: str | None, key: str | None, tenant: str | None) -> Connection:
        """Options first, then ``PLUGIN_DAEMON_*``, then the daemon's own settings and data folder."""
        looked_in = ["--key", KEY_ENV]
        settings = None
        with contextlib.suppress(SettingsError):  # a client does not need the daemon's settings to be valid
            settings = load_settings()
        url = url or os.environ.get(URL_ENV) or None
        if url is None:
            host, port = ("127.0.0.1", 5002)
            if settings is not None:
                host = "127.0.0.1" if settings.SERVER_HOST in ("0.0.0.0", "::", "") else settings.SERVER_HOST
                port = settings.SERVER_PORT
            url = f"http://{host}:{port}"
        tenant = tenant or os.environ.get(TENANT_ENV) or None
        if key:
            return cls(url, key, "--key", looked_in, tenant)
        if os.environ.get(KEY_ENV):
            return cls(url, os.environ[KEY_ENV], KEY_ENV, looked_in, tenant)
        if settings is not None:
            looked_in.append("SERVER_KEY")
            if settings.SERVER_KEY:
                return cls(url, settings.SERVER_KEY, "SERVER_KEY", looked_in, tenant)
            key_path = (settings.home / KEY_FILE).resolve()
            looked_in.append(str(key_path))
            if key_path.is_file():
                return cls(url, key_path.read_text().strip(), str(key_path), looked_in, tenant)
        return cls(url, "", "", looked_in, tenant)

    def key_story(self) -> str:
        where = ", ".join(self.looked_in)
        if not self.key:
            return f"no key found (looked in {where})"
        return f"the key from {self.key_source} (looked in {where})"

    def require_tenant(self) -> str:
        if not self.tenant:
            raise DaemonClientError(f"no tenant: give --tenant or set {TENANT_ENV}")
        return self.tenant


class DaemonClient:
    """The daemon's HTTP API, answers unwrapped from their envelope."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.http = httpx.Client(base_url=connection.url, headers={"X-Api-Key": connection.key}, timeout=TIMEOUT)

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    @property
    def tenant(self) -> str:
        return self.connection.require_tenant()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        self._check_status(response)
        return response

    def unreachable(self, exc: Exception) -> DaemonClientError:
        reason = str(exc) or type(exc).__name__
        return DaemonClientError(f"cannot reach the daemon at {self.connection.url}: {reason}")

    def _check_status(self, response: httpx.Response) -> None:
        if response.status_code == 401:
            raise DaemonClientError(
                f"the daemon at {self.connection.url} refused {self.connection.key_story()}: unauthorized"
            )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The ``data`` of a successful envelope; a failed one raises its message."""
        response = self._send(method, path, **kwargs)
        body = _json_or_none(response.content)
        if not isinstance(body, dict) or "code" not in body:
            raise DaemonClientError(f"the daemon at {self.connection.url} answered HTTP {response.status_code}")
        if body["code"] != 0:
            raise DaemonClientError(str(body.get("message") or f"HTTP {response.status_code}"))
        return body.get("data")

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    def health(self) -> dict[str, Any]:
        """``/health/check`` with the key: each runtime's plugins, processes and errors."""
        response = self._send("GET", "/health/check")
        body = _json_or_none(response.content)
        if not isinstance(body, dict):
            raise DaemonClientError(f"the daemon at {self.connection.url} answered HTTP {response.status_code}")
        if "runtimes" not in body:  # the health route ignores a wrong key rather than refusing it
            raise DaemonClientError(
                f"the daemon at {self.connection.url} refused {self.connection.key_story()}: unauthorized"
            )
        return body

    def installations(self) -> list[dict[str, Any]]:
        """Every installation of the tenant (all pages)."""
        found: list[dict[str, Any]] = []
        number = 1
        while True:
            data = self.get(f"/plugin/{self.tenant}/management/list", page=number, page_size=256)
            found += data["list"]
            if len(found) >= data["total"] or not data["list"]:
                return found
            number += 1

    def events(self, method: str, path: str, **kwargs: Any) -> Iterator[Any]:
        """Each ``data:`` of a server-sent event stream, as it arrives."""
        try:
            with self.http.stream(method, path, timeout=httpx.Timeout(TIMEOUT, read=None), **kwargs) as response:
                if response.status_code != 200 or not response.headers.get("content-type", "").startswith(
                    "text/event-stream"
                ):
                    response.read()
                    self._check_status(response)
                    body = _json_or_none(response.content)
                    message = body.get("message") if isinstance(body, dict) else None
                    raise DaemonClientError(str(message or f"HTTP {response.status_code}"))
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        yield orjson.loads(line[len("data:") :].strip())
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None


def _json_or_none(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
