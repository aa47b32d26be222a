"""Failures answer in Dify's envelope with the right status and nothing internal: a chunked body over
the limit, a caller that leaves mid-request, many uploads of one new package at once, and what an
upload killed mid-write left behind."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from plugin_daemon.config import Settings
from plugin_daemon.packages import build_package

from tests.core.test_management_api import ECHO_TOOL, TENANT, envelope, error_of, upload
from tests.support.daemon_server import running_daemon
from tests.support.waiting import wait_for

LIMIT = 1024 * 1024


def chunked(head: bytes, total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``head`` then filler up to ``total`` bytes, sent with Transfer-Encoding: chunked (no Content-Length)."""
    yield head
    sent = len(head)
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b"x" * piece


MULTIPART_HEAD = (
    b'--b\r\nContent-Disposition: form-data; name="dify_pkg"; filename="p.difypkg"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)
IDENTIFIER = "tester/echo_tool:0.0.1@" + "0" * 64
OVERSIZE = [
    (f"/plugin/{TENANT}/management/install/upload/package", "multipart/form-data; boundary=b", MULTIPART_HEAD),
    (f"/plugin/{TENANT}/management/install/identifiers", "application/json", b'{"plugin_unique_identifiers": ["'),
    ("/v2/invoke/dispatch/tool/invoke", "application/json", b'{"data": {"provider": "'),
]


@pytest.mark.parametrize(("path", "content_type", "head"), OVERSIZE)
def test_a_chunked_body_over_the_limit_answers_413(
    make_settings: Callable[..., Settings], path: str, content_type: str, head: bytes
) -> None:
    with running_daemon(make_settings(MAX_REQUEST_BODY_SIZE=LIMIT)) as server:
        headers = {"Content-Type": content_type, "X-Tenant-ID": TENANT, "X-Plugin-Unique-Identifier": IDENTIFIER}
        response = server.client.post(path, content=chunked(head, LIMIT * 3), headers=headers)
        assert response.status_code == 413, response.text
        assert "larger than the limit" in error_of(response)["message"]


def test_a_caller_that_leaves_mid_request_is_not_logged_as_an_error(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="plugin_daemon")
    with running_daemon(make_settings(PLUGIN_REMOTE_INSTALLING_ENABLED=False)) as server:
        paths = [f"/plugin/{TENANT}/management/install/identifiers", "/v2/invoke/dispatch/tool/invoke"]
        for path in paths:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Api-Key: {server.settings.SERVER_KEY}\r\n"
                    f"X-Tenant-ID: {TENANT}\r\nX-Plugin-Unique-Identifier: {IDENTIFIER}\r\n"
                    "Content-Type: application/json\r\n"
                    'Content-Length: 1000\r\n\r\n{"data":'.encode()
                )
        for path in paths:
            wait_for(
                lambda path=path: any(
                    "left before sending its whole request" in r.getMessage() and path in r.getMessage()
                    for r in caplog.records
                ),
                10,
                f"the daemon to see the caller of {path} leave",
            )
        assert server.client.get("/health/check").status_code == 200
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, [record.getMessage() for record in errors]


def test_unexpected_failures_answer_without_their_text(make_settings: Callable[..., Settings]) -> None:
    """A JSON body Starlette itself refuses (a malformed multipart) is a bad request, not -500."""
    with running_daemon(make_settings()) as server:
        response = server.client.post(
            f"/plugin/{TENANT}/management/install/upload/package",
            content=b"--b\r\nnot a part header\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )
        body = response.json()
        assert body["code"] != 0 and body["data"] is None, body
        assert "Traceback" not in response.text and 'File "' not in response.text


def test_concurrent_uploads_of_one_new_package_all_succeed(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    package = build_package(ECHO_TOOL)
    with running_daemon(make_settings(DATABASE_URL=database_url)) as server:
        limits = httpx.Limits(max_connections=120)
        with (
            httpx.Client(
                base_url=server.url, headers={"X-Api-Key": server.settings.SERVER_KEY}, limits=limits
            ) as client,
            ThreadPoolExecutor(120) as pool,
        ):
            answers = list(pool.map(lambda _: upload(client, package), range(120)))
    bodies = [answer.json() for answer in answers]
    failed = [body for body in bodies if body["code"] != 0]
    assert not failed, f"{len(failed)} of 120 failed, e.g. {failed[0]}"
    assert len({json.dumps(envelope(answer)["unique_identifier"]) for answer in answers}) == 1


def test_temporary_files_of_interrupted_uploads_are_removed_at_start(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    settings.ensure_directories()
    leftovers = [settings.package_path / ".tmp-k9x2", settings.media_path / ".tmp-q1w8"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a package")
    kept = settings.package_path / "not-a-temporary-file"
    kept.write_bytes(b"kept")
    with running_daemon(settings):
        assert not any(leftover.exists() for leftover in leftovers)
        assert kept.read_bytes() == b"kept"
