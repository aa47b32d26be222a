"""Plugin storage against the real databases (SQLite file, PostgreSQL, MariaDB), with its values
as files laid out as the Go daemon lays them out."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from plugin_daemon.backwards.storage import NOT_FOUND, PluginStorage, StorageError
from plugin_daemon.store.database import Database
from plugin_daemon.store.models import TenantStorageRow
from sqlalchemy import select

DECLARATION = {"resource": {"permission": {"storage": {"enabled": True, "size": 2048}}}}


@pytest.fixture
def storage(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(database_url)
    yield PluginStorage(database, tmp_path / "persistence", max_size=100 * 1024 * 1024)
    database.dispose()


def test_set_get_exist_delete(storage: PluginStorage) -> None:
    handle = storage.handle
    assert handle("t", "a/p", DECLARATION, {"opt": "set", "key": "k", "value": b"value".hex()}) == {"data": "ok"}
    assert handle("t", "a/p", DECLARATION, {"opt": "get", "key": "k"}) == {"data": b"value".hex()}
    assert handle("t", "a/p", DECLARATION, {"opt": "exist", "key": "k"}) == {"data": True, "exist_num": 1}
    assert handle("t", "a/p", DECLARATION, {"opt": "del", "key": "k"}) == {"data": "ok", "deleted_num": 1}
    assert handle("t", "a/p", DECLARATION, {"opt": "exist", "key": "k"}) == {"data": False, "exist_num": 0}
    with pytest.raises(StorageError, match="load data failed"):
        handle("t", "a/p", DECLARATION, {"opt": "get", "key": "k"})
    assert NOT_FOUND.startswith("load data failed")


def test_scopes_do_not_mix(storage: PluginStorage) -> None:
    storage.set("t1", "a/p", "k", b"one", 100)
    storage.set("t2", "a/p", "k", b"two", 100)
    storage.set("t1", "a/q", "k", b"three", 100)
    assert storage.get("t1", "a/p", "k") == b"one"
    assert storage.get("t2", "a/p", "k") == b"two"
    assert storage.get("t1", "a/q", "k") == b"three"


def test_quota_is_checked_before_writing(storage: PluginStorage) -> None:
    assert storage.quota(DECLARATION) == 2048
    storage.set("t", "a/p", "a", b"x" * 2000, 2048)
    with pytest.raises(StorageError, match="over its quota of 2048"):
        storage.set("t", "a/p", "b", b"y" * 100, 2048)
    assert not storage.exists("t", "a/p", "b")
    assert storage.usage("t", "a/p") == 2000
    storage.set("t", "a/p", "a", b"z" * 2048, 2048)  # replacing counts only the difference
    assert storage.usage("t", "a/p") == 2048
    with pytest.raises(StorageError, match="over its quota"):
        storage.set("t", "a/p", "big", b"x" * 5000, 2048)
    storage.delete("t", "a/p", "a")
    assert storage.usage("t", "a/p") == 0


def test_quota_never_exceeds_the_daemon_ceiling(storage: PluginStorage) -> None:
    small = PluginStorage(storage.db, storage.root, max_size=1024)
    assert small.quota(DECLARATION) == 1024
    assert small.quota({}) == 1024


@pytest.fixture
def sqlite_storage(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(f"sqlite:///{tmp_path / 'one.db'}")
    yield PluginStorage(database, tmp_path / "persistence", max_size=1 << 20)
    database.dispose()


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a/../b", "a//b", "a\\b", "x" * 257, "nul\x00", "/", "."])
def test_hostile_keys_are_refused(sqlite_storage: PluginStorage, key: str) -> None:
    with pytest.raises(StorageError):
        sqlite_storage.set("t", "a/p", key, b"v", 100)
    assert not any(sqlite_storage.root.rglob("*")) if sqlite_storage.root.exists() else True


def test_values_survive_a_restart(database_url: str, tmp_path: Path) -> None:
    first = Database(database_url)
    PluginStorage(first, tmp_path, 1 << 20).set("t", "a/p", "k", b"kept", 100)
    first.dispose()
    second = Database(database_url)
    try:
        assert PluginStorage(second, tmp_path, 1 << 20).get("t", "a/p", "k") == b"kept"
    finally:
        second.dispose()


def test_bad_requests_are_refused(sqlite_storage: PluginStorage) -> None:
    with pytest.raises(StorageError, match="hex"):
        sqlite_storage.handle("t", "a/p", DECLARATION, {"opt": "set", "key": "k", "value": "zz"})
    with pytest.raises(StorageError, match="unknown storage operation"):
        sqlite_storage.handle("t", "a/p", DECLARATION, {"opt": "drop", "key": "k"})
    with pytest.raises(StorageError, match="not a plain name"):
        sqlite_storage.handle("../t", "a/p", DECLARATION, {"opt": "get", "key": "k"})


def test_values_are_files_where_the_go_daemon_keeps_them(storage: PluginStorage) -> None:
    storage.set("t", "author/plugin", "folder/key", b"value", 100)
    storage.set("t", "author/plugin", "/lead", b"v", 100)
    assert (storage.root / "t" / "author" / "plugin" / "folder" / "key").read_bytes() == b"value"
    assert (storage.root / "t" / "author" / "plugin" / "lead").read_bytes() == b"v"
    with storage.db.transaction() as session:
        (row,) = session.scalars(select(TenantStorageRow)).all()
    assert (row.tenant_id, row.plugin_id, row.size) == ("t", "author/plugin", 6)
    assert row.id and row.created_at is not None


def test_usage_rows_the_go_daemon_doubled_are_merged(storage: PluginStorage) -> None:
    with storage.db.transaction() as session:  # two racing first writes of the Go daemon
        session.add(TenantStorageRow(tenant_id="t", plugin_id="a/p", size=3))
        session.add(TenantStorageRow(tenant_id="t", plugin_id="a/p", size=4))
    assert storage.usage("t", "a/p") == 7
    storage.set("t", "a/p", "k", b"xy", 100)
    with storage.db.transaction() as session:
        sizes = session.scalars(select(TenantStorageRow.size).where(TenantStorageRow.tenant_id == "t")).all()
    assert sizes == [9]


WRITERS, ROUNDS, VALUE_SIZE, QUOTA = 20, 10, 100_000, 1 << 20


def test_parallel_writers_never_collide_nor_pass_the_quota(storage: PluginStorage) -> None:
    """Twenty writers at once on a (tenant, plugin) that has stored nothing, ten rounds (three on
    MariaDB, whose commits are slow here): every write answers, the quota holds, and the usage count
    is exactly the bytes on disk (issue 22)."""
    for number in range(ROUNDS if storage.db.dialect != "mysql" else 3):
        tenant = f"tenant-{number}"
        start = threading.Barrier(WRITERS)
        outcomes: list[str] = []

        def write(
            writer: int, tenant: str = tenant, start: threading.Barrier = start, outcomes: list[str] = outcomes
        ) -> None:
            start.wait(timeout=30)
            try:
                storage.set(tenant, "a/p", f"key-{writer}", bytes([writer]) * VALUE_SIZE, QUOTA)
                outcomes.append("ok")
            except StorageError as exc:
                outcomes.append("over" if "over its quota" in str(exc) else f"error: {exc}")

        threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads), "a storage write hung"
        assert sorted(set(outcomes)) == ["ok", "over"], outcomes
        assert outcomes.count("ok") == QUOTA // VALUE_SIZE
        on_disk = sum(path.stat().st_size for path in (storage.root / tenant).rglob("*") if path.is_file())
        assert storage.usage(tenant, "a/p") == on_disk == outcomes.count("ok") * VALUE_SIZE
        with storage.db.transaction() as session:
            rows = session.scalars(select(TenantStorageRow).where(TenantStorageRow.tenant_id == tenant)).all()
        assert len(rows) == 1


def test_parallel_replacements_of_one_key_keep_the_count(storage: PluginStorage) -> None:
    start = threading.Barrier(WRITERS)

    def write(writer: int) -> None:
        start.wait(timeout=30)
        storage.set("t", "a/p", "same", bytes([writer]) * (1000 + writer), QUOTA)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    value = storage.get("t", "a/p", "same")
    assert len(value) == 1000 + value[0]
    assert storage.usage("t", "a/p") == len(value)
