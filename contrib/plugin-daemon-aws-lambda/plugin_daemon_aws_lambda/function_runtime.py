"""What runs inside the Lambda function: the SDK plugin, and a Runtime API loop that streams its frames.

Copied into every deployment package as ``dify_lambda_runtime.py`` and started by the package's
``bootstrap`` exec wrapper (``AWS_LAMBDA_EXEC_WRAPPER``) in place of the managed Python runtime's
own loop: the managed Python runtime buffers a handler's answer, and a plugin's answer must
stream. It uses the standard library only, as it runs before (and beside) the plugin's packages.

At init it starts the plugin with the SDK in serverless mode (``INSTALL_METHOD=serverless``, the
SDK's own ``/invoke`` and ``/health`` server on 127.0.0.1) and waits for ``/health``. Then, per
invocation, it takes the Function URL event (payload format 2.0) from the Runtime API, checks the
daemon's ``X-Dify-Plugin-Signature`` when the function has a signing secret, passes the body to
the plugin's ``/invoke`` and streams the plugin's answer back as it comes, in the Runtime API's
streaming mode (``Lambda-Runtime-Function-Response-Mode: streaming``): an HTTP integration prelude
(``{"statusCode", "headers"}`` then eight zero bytes), then the frames. A plugin that dies
mid-answer ends the stream with a ``{"errorType": "Runtime.ExitError"}`` line, which both Dify's
Go daemon and this project's daemon read as a cloud error.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

RUNTIME_API_VERSION = "2018-06-01"
PRELUDE_SEPARATOR = b"\x00" * 8
STREAM_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
SIGNATURE_HEADER = "x-dify-plugin-signature"
#: seconds the plugin has to answer /health at init (Lambda's init phase lasts 10 s)
READY_TIMEOUT = float(os.environ.get("DIFY_PLUGIN_READY_TIMEOUT", "9"))
READ_SIZE = 64 * 1024


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    """``sha256=<hex>`` HMAC of the body (the daemon's signing.sign; this file cannot import it)."""
    if not header:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Plugin:
    """The SDK plugin process, serving its serverless mode on a loopback port."""

    def __init__(self, task_root: str) -> None:
        self.task_root = task_root
        self.port = free_port()
        entry_file = os.path.join(task_root, "plugin", "dify_lambda_entrypoint")  # written by package.py
        entrypoint = "main"
        if os.path.exists(entry_file):
            with open(entry_file) as handle:
                entrypoint = handle.read().strip() or "main"
        env = dict(os.environ)
        site = os.path.join(task_root, "python")
        env.update(
            {
                "PYTHONPATH": site + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""),
                "INSTALL_METHOD": "serverless",
                "SERVERLESS_HOST": "127.0.0.1",
                "SERVERLESS_PORT": str(self.port),
                "PYTHONUNBUFFERED": "1",
                "HOME": env.get("DIFY_PLUGIN_HOME", "/tmp"),
            }
        )
        env.pop("AWS_LAMBDA_EXEC_WRAPPER", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", entrypoint], cwd=os.path.join(task_root, "plugin"), env=env
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the plugin exited with code {self.process.returncode} during init")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the plugin did not answer /health within {timeout:g} s")

    def invoke(self, query: str, body: bytes, session_id: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=None)
        headers = {"Content-Type": "application/json", "Dify-Plugin-Session-ID": session_id}
        connection.request("POST", "/invoke" + (f"?{query}" if query else ""), body=body, headers=headers)
        return connection.getresponse()


def prelude(status: int, content_type: str) -> bytes:
    return json.dumps({"statusCode": status, "headers": {"content-type": content_type}}).encode() + PRELUDE_SEPARATOR


def error_body(status: int, error_type: str, message: str) -> Iterator[bytes]:
    yield prelude(status, "application/json")
    yield json.dumps({"errorType": error_type, "errorMessage": message}).encode()


def answer(plugin: Plugin, event: dict[str, Any], secret: str) -> Iterator[bytes]:
    """The streamed answer to one Function URL event (prelude first)."""
    http_context = (event.get("requestContext") or {}).get("http") or {}
    method = str(http_context.get("method") or "GET").upper()
    path = str(event.get("rawPath") or http_context.get("path") or "/")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    if path.rstrip("/").endswith("/health") and method == "GET":
        yield prelude(200, "text/plain")
        yield b"OK"
        return
    if method != "POST" or not path.rstrip("/").endswith("/invoke"):
        yield from error_body(404, "NotFound", f"no route {method} {path}")
        return
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else str(raw).encode()
    if secret and not signature_ok(secret, body, headers.get(SIGNATURE_HEADER)):
        yield from error_body(401, "Unauthorized", "missing or wrong X-Dify-Plugin-Signature")
        return
    try:
        response = plugin.invoke(
            str(event.get("rawQueryString") or ""), body, headers.get("dify-plugin-session-id", "")
        )
    except OSError as exc:
        yield from error_body(502, "Runtime.ExitError", f"the plugin did not take the call: {exc!r}")
        return
    yield prelude(response.status, response.getheader("content-type") or "text/event-stream")
    try:
        while chunk := response.read1(READ_SIZE):
            yield chunk
    except (OSError, http.client.HTTPException) as exc:
        code = plugin.process.poll()
        how = f"exited with code {code}" if code is not None else f"broke the connection ({exc!r})"
        line = {"errorType": "Runtime.ExitError", "errorMessage": f"the plugin {how} while handling the call"}
        yield b"\n" + json.dumps(line).encode() + b"\n\n"


class RuntimeAPI:
    def __init__(self, address: str) -> None:
        host, _, port = address.partition(":")
        self.host, self.port = host, int(port or 80)
        self.base = f"/{RUNTIME_API_VERSION}/runtime"

    def _connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=None)

    def next(self) -> tuple[str, dict[str, Any]]:
        connection = self._connection()
        connection.request("GET", f"{self.base}/invocation/next")
        response = connection.getresponse()
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id") or ""
        return request_id, json.loads(response.read() or b"{}")

    def stream(self, request_id: str, chunks: Iterator[bytes]) -> None:
        connection = self._connection()
        headers = {
            "Lambda-Runtime-Function-Response-Mode": "streaming",
            "Content-Type": STREAM_CONTENT_TYPE,
            "Transfer-Encoding": "chunked",
        }
        connection.request(
            "POST", f"{self.base}/invocation/{request_id}/response", body=chunks, headers=headers, encode_chunked=True
        )
        connection.getresponse().read()

    def init_error(self, message: str) -> None:
        connection = self._connection()
        body = json.dumps({"errorType": "Runtime.InitError", "errorMessage": message}).encode()
        headers = {"Content-Type": "application/json", "Lambda-Runtime-Function-Error-Type": "Runtime.InitError"}
        connection.request("POST", f"{self.base}/init/error", body=body, headers=headers)
        connection.getresponse().read()


def main() -> None:
    api = RuntimeAPI(os.environ["AWS_LAMBDA_RUNTIME_API"])
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.path.dirname(os.path.abspath(__file__))
    secret = os.environ.get("DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET", "")
    plugin = Plugin(task_root)
    try:
        plugin.wait_ready(READY_TIMEOUT)
    except RuntimeError as exc:
        api.init_error(str(exc))
        plugin.process.kill()
        sys.exit(1)
    while True:
        request_id, event = api.next()
        api.stream(request_id, answer(plugin, event, secret))


if __name__ == "__main__":
    main()
