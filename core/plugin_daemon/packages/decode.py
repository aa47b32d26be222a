"""decode_package: from untrusted bytes to a validated, identified plugin declaration."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .archive import DEFAULT_MAX_ENTRIES, DEFAULT_MAX_SIZE, read_archive
from .assets import package_assets, remap_icons
from .checksum import package_checksum
from .declaration import build_declaration
from .errors import PackageError
from .identity import PluginIdentifier
from .keyring import TrustedKey, describe
from .signature import check_signature
from .yaml_loader import MAX_SIZE as MAX_YAML_SIZE


@dataclass(frozen=True)
class DecodedPackage:
    identifier: PluginIdentifier
    checksum: str
    declaration: dict[str, Any]  # JSON-able, icon fields rewritten to media ids
    assets: dict[str, bytes]  # media id -> content, for every file under _assets/
    verification: dict[str, str] | None  # {"authorized_category": ...} when the signature verified
    files: dict[str, bytes]  # path -> content, in zip order


def decode_package(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    keys: Sequence[TrustedKey] = (),
    require_signature: bool = False,
    max_yaml_size: int = MAX_YAML_SIZE,
) -> DecodedPackage:
    """Check, verify (with ``keys``, in order) and read a .difypkg; raise PackageError saying what is wrong."""
    archive = read_archive(data, max_size=max_size, max_entries=max_entries)
    signature = check_signature(archive, keys)
    if require_signature and not signature.verified:
        raise PackageError(
            f"the package signature is required but could not be verified (keys tried: {describe(keys)}): "
            f"{signature.reason}"
        )
    verification = signature.verification
    checksum = package_checksum(archive.files)
    declaration = build_declaration(archive.files, max_yaml_size=max_yaml_size)
    declaration["verified"] = signature.verified
    identifier = PluginIdentifier.parse(
        f"{declaration['author']}/{declaration['name']}:{declaration['version']}@{checksum}"
    )
    assets = remap_icons(declaration, package_assets(archive.files))
    return DecodedPackage(
        identifier=identifier,
        checksum=checksum,
        declaration=declaration,
        assets=assets,
        verification=verification,
        files=archive.files,
    )
