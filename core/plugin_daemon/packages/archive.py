"""Reading a zip archive that nobody should trust: names, entry kinds and sizes are all checked."""

from __future__ import annotations

import io
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from .errors import PackageError

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
DEFAULT_MAX_ENTRIES = 10_000

_CHUNK = 64 * 1024
_DRIVE_RE = re.compile(r"[A-Za-z]:")
_UTF8_FLAG = 0x800
_ENCRYPTED_FLAG = 0x1
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}


@dataclass(frozen=True)
class Archive:
    """The regular files of a zip (directory entries dropped), in zip order, and its comment."""

    files: dict[str, bytes]
    comment: bytes
    entry_names: tuple[str, ...] = ()  # every entry, folders included, in zip order


def read_archive(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    wanted: Callable[[str], bool] | None = None,
    max_file_size: int | None = None,
) -> Archive:
    """Read every entry of ``data``, or raise PackageError on the first thing that is unsafe or broken.

    Every entry's name, kind and declared size is checked; with ``wanted``, only the regular files
    it accepts are read (the others are never decompressed, so they cost nothing); with
    ``max_file_size``, a file read may hold at most that many bytes.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PackageError(f"package data must be bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise PackageError(f"package is {len(data)} bytes, over the limit of {max_size} bytes")
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise PackageError("package is not a zip archive") from None
    except (zipfile.LargeZipFile, NotImplementedError) as exc:
        raise PackageError(f"package is a zip archive of a kind that cannot be read ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise PackageError(f"package has {len(infos)} zip entries, more than the limit of {max_entries}")
        names = [_checked_name(info) for info in infos]
        declared = sum(info.file_size for info in infos)
        if declared > max_size:
            raise PackageError(f"package would unpack to {declared} bytes, over the limit of {max_size} bytes")
        paths: set[str] = set()
        for name in names:
            if name in paths:
                raise PackageError(f"zip entry {name!r} appears more than once")
            if not name.endswith("/"):
                paths.add(name)
        _check_no_file_is_a_folder(paths)
        files: dict[str, bytes] = {}
        budget = max_size
        for info, name in zip(infos, names, strict=True):
            if name.endswith("/") or (wanted is not None and not wanted(name)):
                continue
            if max_file_size is not None and info.file_size > max_file_size:
                raise PackageError(f"{name} is {info.file_size} bytes, more than the limit of {max_file_size} bytes")
            content = _read_entry(archive, info, name, budget, max_size)
            budget -= len(content)
            files[name] = content
        return Archive(files=files, comment=archive.comment, entry_names=tuple(names))


def read_entries(data: bytes, wanted: Callable[[str], bool], *, max_size: int = DEFAULT_MAX_SIZE) -> dict[str, bytes]:
    """Only the regular files whose name ``wanted`` accepts, read with the same checks as
    :func:`read_archive` (a package kept by the daemon, read again for one of its files)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zipfile.LargeZipFile, NotImplementedError):
        raise PackageError("package is not a zip archive that can be read") from None
    with archive:
        files: dict[str, bytes] = {}
        budget = max_size
        for info in archive.infolist():
            name = _checked_name(info)
            if name.endswith("/") or not wanted(name):
                continue
            content = _read_entry(archive, info, name, budget, max_size)
            budget -= len(content)
            files[name] = content
        return files


def _check_no_file_is_a_folder(files: Collection[str]) -> None:
    folders = {path.rsplit("/", 1)[0] for path in files if "/" in path}
    for folder in list(folders):
        while "/" in folder:
            folder = folder.rsplit("/", 1)[0]
            folders.add(folder)
    clash = next((path for path in files if path in folders), None)
    if clash is not None:
        raise PackageError(f"zip entry {clash!r} is both a file and a folder")


def _checked_name(info: zipfile.ZipInfo) -> str:
    """The entry's name as the Go daemon sees it, once it is known to be a safe relative path."""
    raw = info.orig_filename
    name = raw
    if not info.flag_bits & _UTF8_FLAG:
        # zipfile decoded the raw bytes as cp437; Go keeps them raw, and tools write UTF-8.
        try:
            name = raw.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            raise PackageError(f"zip entry name {raw!r} is not valid UTF-8") from None
    if "\x00" in name:
        raise PackageError(f"zip entry name {name!r} contains a NUL byte")
    if name == "":
        raise PackageError("zip entry has an empty name")
    if "\\" in name:
        raise PackageError(f"zip entry {name!r} contains a backslash; package paths use '/'")
    if name.startswith("/"):
        raise PackageError(f"zip entry {name!r} is an absolute path")
    if _DRIVE_RE.match(name):
        raise PackageError(f"zip entry {name!r} starts with a drive letter")
    parts = name[:-1].split("/") if name.endswith("/") else name.split("/")
    if ".." in parts:
        raise PackageError(f"zip entry {name!r} escapes the package folder")
    if any(part in ("", ".") for part in parts):
        raise PackageError(f"zip entry {name!r} has an empty or '.' path component")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise PackageError(f"zip entry {name!r} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise PackageError(f"zip entry {name!r} is not a regular file or folder")
    if info.flag_bits & _ENCRYPTED_FLAG:
        raise PackageError(f"zip entry {name!r} is encrypted")
    if info.compress_type not in _SUPPORTED_COMPRESSION:
        raise PackageError(
            f"zip entry {name!r} uses compression method {info.compress_type}; only stored and deflate are supported"
        )
    return name


def _read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: int, max_size: int) -> bytes:
    """Stream one entry, stopping as soon as it outgrows its header or the package's size budget.

    The content goes into one buffer of the declared size (the headers' sizes are within the limit):
    a big file kept as many small pieces until joined would leave the heap grown after it is freed.
    """
    if info.file_size > budget:
        raise PackageError(f"package unpacks to more than the limit of {max_size} bytes")
    content = bytearray(info.file_size)
    size = 0
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                end = size + len(chunk)
                if end > info.file_size:
                    raise PackageError(f"zip entry {name!r} holds more data than its header declares")
                content[size:end] = chunk
                size = end
    except PackageError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        # Python's reader stops at the declared size, so a header that lies shows up as a bad CRC here.
        raise PackageError(f"zip entry {name!r} is corrupt or its header lies about its size ({exc})") from None
    if size != info.file_size:
        raise PackageError(f"zip entry {name!r} holds {size} bytes but its header declares {info.file_size}")
    return bytes(content)


# Fixed entry metadata, so the same files always make the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_FILE_MODE = 0o100644


def write_archive(files: Iterable[tuple[str, bytes]], *, comment: bytes = b"") -> bytes:
    """Zip ``files`` in the order given, deflated, with fixed timestamps and permissions."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = _FILE_MODE << 16
            archive.writestr(info, content, compresslevel=6)
        archive.comment = comment
    return buffer.getvalue()
