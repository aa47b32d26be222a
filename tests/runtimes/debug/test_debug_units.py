"""The debug runtime's parts on their own: registration frames, declarations, keys, rate limit, logs, traces."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
import yaml
from plugin_daemon.logbook import LogBook
from plugin_daemon.packages import PackageError, build_package, declaration_from_parts, decode_package
from plugin_daemon.plugins import load_extensions
from plugin_daemon.protocol.framing import LineReader, LineTooLong
from plugin_daemon.runtime import EventKind, SessionEvent
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import KeyValueRow
from plugin_daemon_debug.declaration import build_plugin, identity_checksum
from plugin_daemon_debug.dev_cli import watched_in
from plugin_daemon_debug.handshake import Refused, Registration, read_registration
from plugin_daemon_debug.keys import BY_KEY, DebuggingKeys
from plugin_daemon_debug.limits import FailedAuthLimiter
from plugin_daemon_debug.routes import routes
from plugin_daemon_debug.runtime import DebugRuntime
from plugin_daemon_debug.tracing import Tracer

from tests.support.plugin_driver import PLUGINS_DIR

ECHO = PLUGINS_DIR / "echo_tool"


class Chunks:
    """A byte stream that returns the given chunks, then ends."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        return self.chunks.pop(0)


def line(kind: str, data: Any) -> bytes:
    return orjson.dumps({"type": kind, "data": data}) + b"\n\n"


def echo_manifest() -> dict[str, Any]:
    return yaml.safe_load((ECHO / "manifest.yaml").read_text())


def echo_tool_provider() -> dict[str, Any]:
    """The tool provider as the SDK sends it: expanded, its icon still a file name."""
    provider = decode_package(build_package(ECHO)).declaration["tool"]
    provider["identity"]["icon"] = "icon.svg"
    return provider


ICON = (ECHO / "_assets" / "icon.svg").read_bytes()


def sdk_frames(key: str = "k", **changes: Any) -> list[bytes]:
    manifest = changes.get("manifest", echo_manifest())
    frames = [orjson.dumps({"type": "handshake", "data": {"key": key}}) + b"\n", line("manifest_declaration", manifest)]
    frames.append(line("tool_declaration", changes.get("tools", [echo_tool_provider()])))
    encoded = base64.b64encode(ICON).decode()
    frames.append(line("asset_chunk", {"filename": "icon.svg", "data": encoded[:20], "end": False}))
    frames.append(line("asset_chunk", {"filename": "icon.svg", "data": encoded[20:], "end": True}))
    frames.append(line("end", {}))
    return frames


async def authenticate(key: str) -> str:
    if key != "k":
        raise Refused("handshake failed, invalid key")
    return "tenant-a"


async def read(*chunks: bytes, max_assets: int = 1 << 20, strict: bool = True) -> Registration:
    reader = LineReader(Chunks(*chunks), 1 << 20, strict=strict)  # type: ignore[arg-type]
    return await read_registration(reader, authenticate, max_assets=max_assets)


pytestmark = pytest.mark.anyio


# --- registration frames ---------------------------------------------------------------------


async def test_the_sdk_registration_is_read_whole() -> None:
    registration = await read(b"".join(sdk_frames()))
    assert registration.tenant_id == "tenant-a"
    assert registration.manifest["name"] == "echo_tool"
    assert registration.providers["tool"]["identity"]["name"] == "echo_tool"
    assert registration.assets == {"icon.svg": ICON}


async def test_frames_split_anywhere_still_read() -> None:
    data = b"".join(sdk_frames())
    registration = await read(*(data[i : i + 7] for i in range(0, len(data), 7)))
    assert registration.assets == {"icon.svg": ICON}


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"garbage\n"], "handshake failed, invalid handshake message"),
        ([b"[1,2]\n"], "handshake failed, invalid handshake message"),
        ([line("manifest_declaration", {})], "handshake failed, registration message before handshake"),
        ([line("handshake", {"key": "nope"})], "handshake failed, invalid key"),
        ([line("handshake", "k")], "handshake failed, invalid handshake message"),
        ([line("handshake", {"key": "k"}), line("handshake", {"key": "k"})], "handshake already completed"),
        ([line("handshake", {"key": "k"}), line("end", {})], "no manifest_declaration was sent"),
        (
            [line("handshake", {"key": "k"}), line("manifest_declaration", {"a": 1}), line("end", {})],
            "no registration transferred, cannot initialize",
        ),
        (
            [line("handshake", {"key": "k"}), line("manifest_declaration", {}), line("manifest_declaration", {})],
            "declaration already registered",
        ),
        (
            [line("handshake", {"key": "k"}), line("tool_declaration", [{}]), line("tool_declaration", [{}])],
            "tool declaration already registered",
        ),
        (
            [line("handshake", {"key": "k"}), line("asset_chunk", {"filename": "a", "data": "!!", "end": True})],
            "assets decode failed",
        ),
        ([line("handshake", {"key": "k"})], "the connection ended before the registration did"),
    ],
)
async def test_refusals(frames: list[bytes], reason: str) -> None:
    with pytest.raises(Refused) as refused:
        await read(b"".join(frames))
    assert reason in refused.value.line


async def test_assets_are_capped_in_total() -> None:
    chunk = base64.b64encode(b"x" * 600).decode()
    frames = [line("handshake", {"key": "k"})] + [
        line("asset_chunk", {"filename": f"f{i}", "data": chunk, "end": True}) for i in range(3)
    ]
    with pytest.raises(Refused, match="assets too large"):
        await read(b"".join(frames), max_assets=2000)


async def test_a_strict_reader_stops_at_the_limit_without_a_newline() -> None:
    reader = LineReader(Chunks(b"x" * 700, b"x" * 700), 1000, strict=True)  # type: ignore[arg-type]
    with pytest.raises(LineTooLong):
        await reader.__anext__()


# --- declarations and identity -----------------------------------------------------------------


def test_a_registered_declaration_matches_the_packaged_one() -> None:
    packaged = decode_package(build_package(ECHO))
    plugin = build_plugin(Registration("tenant-a", echo_manifest(), {"tool": echo_tool_provider()}, {"icon.svg": ICON}))
    assert plugin.plugin_id == "tester/echo_tool"
    assert plugin.declaration == packaged.declaration  # icons remapped to the same media ids
    assert plugin.media == packaged.assets
    checksum = identity_checksum(plugin.declaration, "tenant-a")
    assert plugin.identifier == f"tester/echo_tool:0.0.1@{checksum}"
    other = build_plugin(Registration("tenant-b", echo_manifest(), {"tool": echo_tool_provider()}, {"icon.svg": ICON}))
    assert other.identifier != plugin.identifier  # one identity per tenant


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda m, p: m.update(version="not-a-version"), "field 'version'"),
        (lambda m, p: m.update(author="Bad Author"), "field 'author'"),
        (lambda m, p: m["plugins"].update(models=["x.yaml"]), "cannot be combined"),
        (lambda m, p: p.pop("identity"), "identity.name"),
    ],
)
def test_invalid_declarations_are_refused(change: Any, reason: str) -> None:
    manifest, provider = echo_manifest(), echo_tool_provider()
    change(manifest, provider)
    with pytest.raises(Refused, match="register failed, invalid manifest detected") as refused:
        build_plugin(Registration("t", manifest, {"tool": provider}, {"icon.svg": ICON}))
    assert reason in refused.value.line


def test_a_missing_icon_is_refused() -> None:
    with pytest.raises(Refused, match="assets remap failed"):
        build_plugin(Registration("t", echo_manifest(), {"tool": echo_tool_provider()}, {}))


def test_declaration_from_parts_checks_provider_shapes() -> None:
    with pytest.raises(PackageError, match="model declaration: field 'provider' is required"):
        declaration_from_parts(echo_manifest(), {"model": {"models": []}})
    with pytest.raises(PackageError, match="expected a mapping"):
        declaration_from_parts(echo_manifest(), {"tool": [1]})


# --- keys ----------------------------------------------------------------------------------------


def test_keys_live_refresh_and_expire(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    keys = DebuggingKeys(database, ttl=3600)
    key = keys.issue("tenant-a")
    assert keys.issue("tenant-a") == key  # the same key while it lives
    assert keys.issue("tenant-b") != key  # one tenant per key
    assert keys.tenant_of(key) == "tenant-a"
    assert keys.tenant_of("unknown") is None
    with database.transaction() as session:  # age the key past its life
        row = session.get(KeyValueRow, (BY_KEY, key))
        assert row is not None
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert keys.tenant_of(key) is None
    assert keys.issue("tenant-a") != key
    assert DebuggingKeys(Database(f"sqlite:///{tmp_path / 'k.db'}"), ttl=3600).issue("tenant-b") == keys.issue(
        "tenant-b"
    )  # kept in the database


def test_using_a_key_extends_its_life(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'k.db'}")
    keys = DebuggingKeys(database, ttl=3600)
    key = keys.issue("tenant-a")
    with database.transaction() as session:
        row = session.get(KeyValueRow, (BY_KEY, key))
        assert row is not None
        row.expires_at = datetime.now(UTC) + timedelta(seconds=5)
    assert keys.tenant_of(key) == "tenant-a"
    with database.transaction() as session:
        row = session.get(KeyValueRow, (BY_KEY, key))
        assert row is not None and row.expires_at is not None
        assert row.expires_at.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(seconds=3000)


# --- rate limit, logs, traces ---------------------------------------------------------------------


def test_failed_keys_are_limited_per_address() -> None:
    now = [100.0]
    limiter = FailedAuthLimiter(3, 60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a") == 0
        limiter.failed("a")
    assert limiter.retry_after("a") == pytest.approx(60)
    assert limiter.retry_after("b") == 0  # other addresses are unaffected
    now[0] += 30
    assert limiter.retry_after("a") == pytest.approx(30)
    now[0] += 31
    assert limiter.retry_after("a") == 0


async def test_logbook_keeps_and_streams() -> None:
    book = LogBook(keep=2)
    book.add("t", "p/a", 20, "one", "plugin")
    with book.watch("t", "p/a") as live:
        book.add("t", "p/b", 20, "elsewhere", "plugin")
        book.add("t", "p/a", 30, "two", "daemon")
        book.add("t", "p/a", 20, "three", "plugin")
        with anyio.fail_after(1):
            assert [(await live.receive()).message for _ in range(2)] == ["two", "three"]
    assert [entry.message for entry in book.history("t", "p/a")] == ["two", "three"]  # the last `keep`
    assert [entry.message for entry in book.history("t")] == ["elsewhere", "two", "three"]
    assert book.history("other") == [] and book.watchers == 0


async def test_traces_mask_credentials_and_cut_big_payloads() -> None:
    tracer = Tracer(keep=2)
    request = orjson.dumps(
        {"session_id": "s", "data": {"type": "tool", "action": "invoke_tool", "credentials": {"api_key": "secret"}}}
    )
    trace = tracer.start("t", "p/a", "id", "s", request)
    trace.plugin_sent(SessionEvent(EventKind.STREAM, {"text": "x" * 10_000}))
    trace.daemon_sent(b'{"event":"backwards_response","data":{"event":"end"}}')
    trace.plugin_sent(SessionEvent(EventKind.END, {}))
    record = trace.as_dict()
    assert record["request"]["data"]["credentials"] == {"api_key": "***"}
    assert record["steps"][0]["data"]["truncated"] is True
    assert [step["kind"] for step in record["steps"]] == ["stream", "backwards_response", "end"]
    assert record["state"] == "ended"
    for n in range(3):
        tracer.start("t", "p/a", "id", f"s{n}", request)
    assert [t.session_id for t in tracer.traces("t", "p/a")] == ["s2", "s1"]


def test_the_entry_point_registers_the_remote_runtime_and_its_routes() -> None:
    extensions = load_extensions()
    assert extensions.runtime_factories()["remote"] is DebugRuntime
    paths = {route.path for route in extensions.routes()}  # type: ignore[attr-defined]
    assert {route.path for route in routes()} <= paths
    assert "/plugin/{tenant_id}/debugging/key" in paths


def test_dev_watches_code_declarations_and_assets_only(tmp_path: Path) -> None:
    folder = tmp_path / ".hidden" / "plugin"  # where the folder sits does not matter
    watched = watched_in(folder)
    for name in ("main.py", "tools/echo.py", "tools/echo.yaml", "manifest.yaml", ".env", "requirements.txt"):
        assert watched(None, str(folder / name)), name
    assert watched(None, str(folder / "_assets" / "icon.svg"))
    for name in (
        ".venv/lib/x.py",
        "tools/__pycache__/echo.cpython-311.pyc",
        ".git/HEAD",
        "tools/.echo.py.swp",
        "notes.md",
    ):
        assert not watched(None, str(folder / name)), name
