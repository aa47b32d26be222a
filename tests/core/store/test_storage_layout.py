"""Files under the storage root as the Go daemon lays them out: packages and installed packages by
unique identifier, assets by media id; packages this daemon kept by checksum are moved into place."""

from __future__ import annotations

from pathlib import Path

from plugin_daemon.manager import PluginManager
from plugin_daemon.packages import build_package
from plugin_daemon.store.database import Database

from tests.core.test_management_api import ECHO_TOOL, TENANT


def manager_in(make_settings, tmp_path: Path) -> tuple[PluginManager, Database]:  # type: ignore[no-untyped-def]
    settings = make_settings(PLUGIN_STORAGE_LOCAL_ROOT=tmp_path / "root")
    settings.ensure_directories()
    database = Database(f"sqlite:///{tmp_path / 'layout.db'}")
    return PluginManager(settings, database), database


def test_packages_installed_copies_and_assets_are_where_go_keeps_them(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manager, database = manager_in(make_settings, tmp_path)
    try:
        package = build_package(ECHO_TOOL)
        identifier = manager.upload(package, verify_signature=False)["unique_identifier"]
        root = tmp_path / "root"
        assert (root / "plugin_packages" / identifier).read_bytes() == package  # tester/echo_tool:0.0.1@<sum>
        icon = manager.manifest(identifier)["icon"]
        assert (root / "assets" / icon).is_file() and icon.endswith(".svg")
        assert not (root / "plugin" / identifier).exists()

        manager.install(TENANT, identifier, runtime_type="local", source="package")
        assert (root / "plugin" / identifier).read_bytes() == package  # Go launches what it finds there
        manager.uninstall_plugin(TENANT, "tester/echo_tool")
        assert not (root / "plugin" / identifier).exists()
        assert (root / "plugin_packages" / identifier).exists()  # the upload is kept, as in Go
    finally:
        database.dispose()


def test_a_package_kept_by_checksum_is_moved_into_place(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    manager, database = manager_in(make_settings, tmp_path)
    try:
        package = build_package(ECHO_TOOL)
        identifier = manager.upload(package, verify_signature=False)["unique_identifier"]
        kept = tmp_path / "root" / "plugin_packages" / identifier
        legacy = tmp_path / "root" / "packages" / (identifier.rpartition("@")[2] + ".difypkg")
        legacy.parent.mkdir(parents=True)
        kept.rename(legacy)
        manager.forget_spec(identifier)
        assert manager.spec(identifier).package_path == kept
        assert kept.read_bytes() == package and not legacy.exists()
    finally:
        database.dispose()
