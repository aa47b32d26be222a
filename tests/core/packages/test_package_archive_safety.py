"""Hostile zips: escaping paths, links, bombs, lying headers, too many entries, not a zip at all."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile

import pytest
from plugin_daemon.packages import PackageError, decode_package

from tests.core.packages.packages_helpers import tool_plugin, zip_files


def with_entry(name: str, content: bytes = b"x", **attributes: int) -> bytes:
    """A valid tool plugin plus one raw entry, named and flagged exactly as given."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate-name case
        for path, data in tool_plugin().items():
            archive.writestr(path, data)
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        for key, value in attributes.items():
            setattr(info, key, value)
        archive.writestr(info, content)
    return buffer.getvalue()


def decode_error(data: bytes, **options: int) -> str:
    with pytest.raises(PackageError) as caught:
        decode_package(data, **options)
    assert str(caught.value) == caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("name", "complaint"),
    [
        ("../evil", "zip entry '../evil' escapes the package folder"),
        ("a/../../b", "zip entry 'a/../../b' escapes the package folder"),
        ("tools/../../../etc/passwd", "escapes the package folder"),
        ("/abs/path", "zip entry '/abs/path' is an absolute path"),
        ("tools\\..\\..\\evil", "contains a backslash"),
        ("C:/windows/evil", "zip entry 'C:/windows/evil' starts with a drive letter"),
        ("a//b", "has an empty or '.' path component"),
        ("./main2.py", "has an empty or '.' path component"),
    ],
)
def test_entries_that_could_escape_are_refused(name: str, complaint: str) -> None:
    assert complaint in decode_error(with_entry(name))


def test_nul_byte_in_a_name_is_refused() -> None:
    # zipfile cuts a name at NUL when writing, so put the NUL in afterwards.
    data = with_entry("evil.txt#.png").replace(b"evil.txt#.png", b"evil.txt\x00.png")
    assert decode_error(data) == "zip entry name 'evil.txt\\x00.png' contains a NUL byte"


def test_symlink_entry_is_refused() -> None:
    data = with_entry("tools/link", b"/etc/passwd", create_system=3, external_attr=0o120777 << 16)
    assert decode_error(data) == "zip entry 'tools/link' is a symbolic link"


def test_device_entry_is_refused() -> None:
    data = with_entry("tools/fifo", b"", create_system=3, external_attr=0o010644 << 16)
    assert "is not a regular file or folder" in decode_error(data)


def test_duplicate_entries_are_refused() -> None:
    data = with_entry("main.py", b"print('second main')")
    assert decode_error(data) == "zip entry 'main.py' appears more than once"


def test_a_file_that_is_also_a_folder_is_refused() -> None:
    data = with_entry("main.py/inner.py")
    assert decode_error(data) == "zip entry 'main.py' is both a file and a folder"


def test_not_a_zip() -> None:
    assert decode_error(b"this is not a zip file") == "package is not a zip archive"
    assert decode_error(b"") == "package is not a zip archive"


def test_compressed_size_is_bounded() -> None:
    data = zip_files(tool_plugin())
    message = decode_error(data, max_size=len(data) - 1)
    assert message == f"package is {len(data)} bytes, over the limit of {len(data) - 1} bytes"


def test_a_highly_compressible_entry_over_the_limit_is_refused() -> None:
    limit = 1024 * 1024
    bomb = with_entry("data/zeros.bin", b"\0" * (4 * limit))
    assert len(bomb) < limit  # small on the wire
    message = decode_error(bomb, max_size=limit)
    assert "would unpack to" in message
    assert f"over the limit of {limit} bytes" in message


# (signature, offset of the general purpose flags, of the uncompressed size, of the name length, of the name)
_LOCAL_HEADER = (b"PK\x03\x04", 6, 22, 26, 30)
_CENTRAL_HEADER = (b"PK\x01\x02", 8, 24, 28, 46)


def patch_headers(data: bytes, name: str, *, size: int | None = None, flags: int | None = None) -> bytes:
    """Rewrite the declared size or the flags of ``name`` in both its local and central headers."""
    patched = bytearray(data)
    for signature, flags_at, size_at, name_length_at, name_at in (_LOCAL_HEADER, _CENTRAL_HEADER):
        start = 0
        while (start := patched.find(signature, start)) >= 0:
            (name_length,) = struct.unpack_from("<H", patched, start + name_length_at)
            if bytes(patched[start + name_at : start + name_at + name_length]) == name.encode():
                if size is not None:
                    struct.pack_into("<I", patched, start + size_at, size)
                if flags is not None:
                    struct.pack_into("<H", patched, start + flags_at, flags)
            start += 4
    return bytes(patched)


def test_an_entry_whose_header_understates_its_size_is_stopped() -> None:
    """The header says 100 bytes; the data inflates to 8 MiB; reading stops at the declared size."""
    honest = with_entry("data/zeros.bin", b"\0" * (8 * 1024 * 1024))
    lying = patch_headers(honest, "data/zeros.bin", size=100)
    with zipfile.ZipFile(io.BytesIO(lying)) as archive:
        assert archive.getinfo("data/zeros.bin").file_size == 100
    message = decode_error(lying, max_size=1024 * 1024)
    assert "zip entry 'data/zeros.bin'" in message
    assert "header lies about its size" in message


def test_an_entry_whose_header_overstates_its_size_is_refused() -> None:
    honest = with_entry("data/small.bin", b"0123456789")
    lying = patch_headers(honest, "data/small.bin", size=11)
    message = decode_error(lying)
    assert "zip entry 'data/small.bin'" in message
    assert "header" in message


def test_too_many_entries() -> None:
    files = tool_plugin()
    message = decode_error(zip_files(files), max_entries=len(files) - 1)
    assert message == f"package has {len(files)} zip entries, more than the limit of {len(files) - 1}"


def test_unsupported_compression_is_refused() -> None:
    data = with_entry("data/x.bin", b"abc" * 100, compress_type=zipfile.ZIP_BZIP2)
    assert "uses compression method 12; only stored and deflate are supported" in decode_error(data)


def test_encrypted_entry_is_refused() -> None:
    data = patch_headers(with_entry("data/x.bin", b"abc"), "data/x.bin", flags=0x1)
    assert decode_error(data) == "zip entry 'data/x.bin' is encrypted"


def test_corrupt_compressed_data_is_reported() -> None:
    data = bytearray(with_entry("data/text.txt", b"hello " * 1000))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("data/text.txt")
    name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
    data[info.header_offset + 30 + name_length + extra_length] = 0xFF  # deflate block type 3: invalid
    message = decode_error(bytes(data))
    assert message.startswith("zip entry 'data/text.txt' is corrupt or its header lies about its size")
