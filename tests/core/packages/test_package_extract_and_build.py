"""safe_extract into folders, and build_package from folders."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from plugin_daemon.packages import PackageError, build_package, decode_package, safe_extract

from tests.core.packages.packages_helpers import (
    MANIFEST,
    changed,
    checksum_by_the_spec,
    to_yaml,
    tool_plugin,
    write_folder,
    zip_entries,
    zip_files,
)

# --- safe_extract -------------------------------------------------------------------------


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_safe_extract_writes_every_file(tmp_path: Path) -> None:
    files = tool_plugin()
    dest = tmp_path / "plugins" / "demo"
    safe_extract(zip_files(files), dest)
    assert tree(dest) == files
    assert os.listdir(tmp_path / "plugins") == ["demo"]  # no staging folder left over


def test_safe_extract_replaces_an_existing_folder(tmp_path: Path) -> None:
    dest = write_folder(tmp_path / "demo", {"stale.py": b"old", "main.py": b"old main"})
    safe_extract(zip_files(tool_plugin()), dest)
    assert tree(dest) == tool_plugin()
    assert os.listdir(tmp_path) == ["demo"]


def hostile_zip(name: str, **attributes: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in tool_plugin().items():
            archive.writestr(path, content)
        info = zipfile.ZipInfo(name)
        for key, value in attributes.items():
            setattr(info, key, value)
        archive.writestr(info, b"payload")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (hostile_zip("../evil.py"), "escapes the package folder"),
        (hostile_zip("/tmp/evil.py"), "is an absolute path"),
        (hostile_zip("a/../../evil.py"), "escapes the package folder"),
        (hostile_zip("tools\\evil.py"), "contains a backslash"),
        (hostile_zip("link", create_system=3, external_attr=0o120777 << 16), "is a symbolic link"),
        (b"not a zip", "not a zip archive"),
    ],
)
def test_safe_extract_refuses_hostile_archives_and_leaves_nothing(tmp_path: Path, data: bytes, complaint: str) -> None:
    parent = tmp_path / "plugins"
    dest = parent / "demo"
    with pytest.raises(PackageError, match=complaint):
        safe_extract(data, dest)
    assert not dest.exists()
    assert not parent.exists() or os.listdir(parent) == []
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["plugins"])


def test_safe_extract_refuses_a_bomb_and_keeps_the_old_folder(tmp_path: Path) -> None:
    dest = write_folder(tmp_path / "demo", {"main.py": b"old main"})
    bomb = zip_files({**tool_plugin(), "zeros.bin": b"\0" * (2 * 1024 * 1024)})
    with pytest.raises(PackageError, match="over the limit of 1048576 bytes"):
        safe_extract(bomb, dest, max_size=1024 * 1024)
    assert tree(dest) == {"main.py": b"old main"}
    assert os.listdir(tmp_path) == ["demo"]


def test_safe_extract_does_not_need_a_manifest(tmp_path: Path) -> None:
    safe_extract(zip_files({"a/b.txt": b"b"}), tmp_path / "x")
    assert tree(tmp_path / "x") == {"a/b.txt": b"b"}


# --- build_package ------------------------------------------------------------------------


def test_build_package_is_deterministic(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "demo", tool_plugin())
    first = build_package(folder)
    os.utime(folder / "main.py", (1, 1))  # timestamps do not matter
    second = build_package(folder)
    assert first == second
    assert decode_package(first).checksum == decode_package(second).checksum == checksum_by_the_spec(first)
    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        names = archive.namelist()
    assert names == sorted(tool_plugin())


def test_build_package_skips_development_clutter(tmp_path: Path) -> None:
    clutter = {
        ".venv/lib/site.py": b"x",
        "__pycache__/main.cpython-312.pyc": b"x",
        "tools/__pycache__/echo.cpython-312.pyc": b"x",
        "tools/stray.pyc": b"x",
        ".git/HEAD": b"ref",
        ".env": b"SECRET=1",
        ".DS_Store": b"x",
        "tools/.DS_Store": b"x",
        "dist/old.difypkg": b"x",
        "build/lib/x.py": b"x",
        "demo.difypkg": b"x",
    }
    kept = {".env.example": b"KEY=", "tools/build/helper.py": b"# a 'build' folder below the root is code"}
    folder = write_folder(tmp_path / "demo", {**tool_plugin(), **clutter, **kept})
    assert zip_entries(build_package(folder)) == {**tool_plugin(), **kept}


def test_build_package_respects_difyignore(tmp_path: Path) -> None:
    ignore = b"# comments are skipped\n*.log\n!keep.log\nsecrets/\n/notes.md\ndocs/**/draft*\n"
    extra = {
        ".difyignore": ignore,
        "debug.log": b"x",
        "tools/trace.log": b"x",
        "keep.log": b"kept",
        "secrets/key.pem": b"x",
        "tools/secrets/key.pem": b"x",
        "notes.md": b"x",
        "tools/notes.md": b"kept: '/notes.md' is anchored to the root",
        "docs/a/b/draft1.md": b"x",
        "docs/final.md": b"kept",
    }
    folder = write_folder(tmp_path / "demo", {**tool_plugin(), **extra})
    built = zip_entries(build_package(folder))
    assert set(built) - set(tool_plugin()) == {".difyignore", "keep.log", "tools/notes.md", "docs/final.md"}


def test_build_package_falls_back_to_gitignore(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "demo", {**tool_plugin(), ".gitignore": b"*.tmp\n", "x.tmp": b"x"})
    assert "x.tmp" not in zip_entries(build_package(folder))


def test_build_package_validates_the_result(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "demo", tool_plugin(changed(MANIFEST, version="one")))
    with pytest.raises(PackageError) as caught:
        build_package(folder)
    assert caught.value.message == (
        f"the package built from {folder} is invalid:"
        " manifest.yaml: field 'version' must look like 1.2.3 (optionally 1.2.3-beta), got 'one'"
    )


def test_build_package_refuses_symlinks(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "demo", tool_plugin())
    (folder / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(PackageError, match="passwd is a symbolic link"):
        build_package(folder)


def test_build_package_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="is not a folder"):
        build_package(tmp_path / "missing")


def test_build_then_decode_round_trip(tmp_path: Path) -> None:
    manifest = changed(MANIFEST, name="round_trip")
    folder = write_folder(tmp_path / "rt", {**tool_plugin(), "manifest.yaml": to_yaml(manifest)})
    decoded = decode_package(build_package(folder))
    assert decoded.identifier.plugin_id == "tester/round_trip"
    assert decoded.files == {**tool_plugin(), "manifest.yaml": to_yaml(manifest)}
