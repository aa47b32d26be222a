"""Plugin storage against the real databases (SQLite file and PostgreSQL)."""

from __future__ import annotations

import pytest
from plugin_daemon.backwards.storage import NOT_FOUND, PluginStorage, StorageError
from plugin_daemon.store.database import Database

DECLARATION = {"resource": {"permission": {"storage": {"enabled": True, "size": 2048}}}}


@pytest.fixture
def storage(database_url: str):  # type: ignore[no-untyped-def]
    database = Database(database_url)
    yield PluginStorage(database, max_size=100 * 1024 * 1024)
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
    small = PluginStorage(storage.db, max_size=1024)
    assert small.quota(DECLARATION) == 1024
    assert small.quota({}) == 1024


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a/../b", "a//b", "a\\b", "x" * 257, "nul\x00"])
def test_hostile_keys_are_refused(storage: PluginStorage, key: str) -> None:
    with pytest.raises(StorageError):
        storage.set("t", "a/p", key, b"v", 100)


def test_values_survive_a_restart(database_url: str) -> None:
    first = Database(database_url)
    PluginStorage(first, 1 << 20).set("t", "a/p", "k", b"kept", 100)
    first.dispose()
    second = Database(database_url)
    try:
        assert PluginStorage(second, 1 << 20).get("t", "a/p", "k") == b"kept"
    finally:
        second.dispose()


def test_bad_requests_are_refused(storage: PluginStorage) -> None:
    with pytest.raises(StorageError, match="hex"):
        storage.handle("t", "a/p", DECLARATION, {"opt": "set", "key": "k", "value": "zz"})
    with pytest.raises(StorageError, match="unknown storage operation"):
        storage.handle("t", "a/p", DECLARATION, {"opt": "drop", "key": "k"})
