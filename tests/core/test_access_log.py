"""The access log: one record per request when ACCESS_LOG is on, none when off; no key, no query."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from plugin_daemon.config import Settings

from tests.conftest import TEST_KEY
from tests.support.daemon_server import running_daemon

ACCESS = "plugin_daemon.access"


def test_each_request_is_one_line_with_status_size_and_time(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger=ACCESS)
    with running_daemon(make_settings(PLATFORM="memory", ACCESS_LOG=True)) as server:
        listing = server.client.get("/plugin/t1/management/list", params={"page": 1, "page_size": 5, "secret": "q"})
        missing = server.client.get("/no/such/route")
    records = [record for record in caplog.records if record.name == ACCESS]
    assert len(records) == 2
    first, second = records
    assert (first.method, first.path, first.status, first.bytes) == (  # type: ignore[attr-defined]
        "GET",
        "/plugin/t1/management/list",
        200,
        len(listing.content),
    )
    assert first.getMessage().startswith("127.0.0.1:") and '"GET /plugin/t1/management/list" 200' in first.getMessage()
    assert (second.path, second.status) == ("/no/such/route", missing.status_code) == ("/no/such/route", 404)  # type: ignore[attr-defined]
    assert all(TEST_KEY not in record.getMessage() and "secret" not in record.getMessage() for record in records)


def test_off_by_default(make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=ACCESS)
    with running_daemon(make_settings(PLATFORM="memory")) as server:
        assert server.client.get("/health/check").status_code == 200
    assert not [record for record in caplog.records if record.name == ACCESS]
