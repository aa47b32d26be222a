"""SERVERLESS_TRANSACTION_ALLOWED_CIDRS: parsed at start-up, matched against the caller's address."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_daemon.config import parse_networks
from plugin_daemon_serverless.transaction import source_allowed
from pydantic import ValidationError

from tests.runtimes.local.local_runtime_support import make_settings


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("10.1.2.3", True),
        ("192.168.7.7", True),
        ("192.168.8.1", False),
        ("127.0.0.1", False),
        ("::ffff:10.0.0.5", True),  # an IPv4 caller on a dual-stack socket
        ("fd00::1", True),
        ("fe80::1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_sources_inside_the_networks_only(host: str | None, allowed: bool) -> None:
    networks = parse_networks("10.0.0.0/8, 192.168.7.0/24 ,fd00::/8")
    assert source_allowed(host, networks) is allowed


def test_no_networks_means_any_source() -> None:
    assert parse_networks(" , ") == ()
    assert source_allowed("203.0.113.9", ()) and source_allowed(None, ())


def test_a_bare_address_is_its_own_network(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, SERVERLESS_TRANSACTION_ALLOWED_CIDRS="172.16.0.4")
    assert source_allowed("172.16.0.4", settings.transaction_networks)
    assert not source_allowed("172.16.0.5", settings.transaction_networks)


def test_a_bad_network_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a network in CIDR notation"):
        make_settings(tmp_path, SERVERLESS_TRANSACTION_ALLOWED_CIDRS="10.0.0.0/8,10.0.0.0/33")
