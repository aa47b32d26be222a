"""Dify ``.difypkg`` plugin packages: decode (safely), validate, verify, extract and build.

The format is the Go daemon's (reference/protocol.md §6): a zip with ``manifest.yaml`` at its root,
the provider YAMLs it names, the plugin's code and ``_assets/``; the checksum and the unique
identifier ``author/name:version@checksum``; an optional RSA signature in the zip comment.
"""

from __future__ import annotations

from .assets import remap_icons
from .build import build_package
from .checksum import package_checksum
from .declaration import PROVIDER_KEYS, declaration_from_parts, plugin_category
from .decode import DecodedPackage, decode_package
from .errors import PackageError
from .extract import safe_extract
from .identity import PluginIdentifier
from .keyring import TrustedKey, load_keyring, official_key
from .signing import generate_key_pair, sign_package

__all__ = [
    "PROVIDER_KEYS",
    "DecodedPackage",
    "PackageError",
    "PluginIdentifier",
    "TrustedKey",
    "build_package",
    "declaration_from_parts",
    "decode_package",
    "generate_key_pair",
    "load_keyring",
    "official_key",
    "package_checksum",
    "plugin_category",
    "remap_icons",
    "safe_extract",
    "sign_package",
]
