"""The public keys a package signature is checked against: Dify's official key, then the operator's.

As in the Go daemon, the official key is always tried; third-party keys (files named in
``THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS``) are added when
``THIRD_PARTY_SIGNATURE_VERIFICATION_ENABLED`` is true. Each key keeps a label, so a refusal can say
which keys were tried, and whether the key that verified is the official one (signature.py gives only
the official key the right to vouch for a package that carries no verification file).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PackageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

OFFICIAL_KEY_LABEL = "Dify's official key"
OFFICIAL_KEY_RESOURCE = "keys/dify_official_public_key.pem"  # where it comes from: keys/README.md


@dataclass(frozen=True)
class TrustedKey:
    label: str  # how messages name it: "Dify's official key", "third-party key 'ours.public.pem'"
    key: rsa.RSAPublicKey
    official: bool = False


def official_key_pem() -> bytes:
    return resources.files(__package__).joinpath(OFFICIAL_KEY_RESOURCE).read_bytes()


@cache
def official_key() -> TrustedKey:
    return TrustedKey(OFFICIAL_KEY_LABEL, load_public_key(official_key_pem(), OFFICIAL_KEY_LABEL), official=True)


def load_public_key(pem: bytes, label: str) -> rsa.RSAPublicKey:
    """An RSA public key from PEM: PKCS#1 ("RSA PUBLIC KEY", what Go writes and reads) or SubjectPublicKeyInfo."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = serialization.load_pem_public_key(bytes(pem))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PackageError(f"{label} is not a PEM-encoded public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PackageError(f"{label} is not an RSA key")
    return key


def third_party_key(pem: bytes, name: str) -> TrustedKey:
    label = f"third-party key {name!r}"
    return TrustedKey(label, load_public_key(pem, label))


def key_paths(setting: str) -> list[str]:
    """The comma-separated list of ``THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS``, trimmed as Go trims it."""
    return [path.strip() for path in setting.split(",") if path.strip()]


def load_keyring(third_party_enabled: bool, third_party_paths: Iterable[str]) -> list[TrustedKey]:
    """The official key, then each third-party key file (read once: a changed file needs a restart).

    A file that cannot be read or is not an RSA public key raises PackageError naming the setting
    (Go skips verification silently in that case; here the daemon refuses to start).
    """
    keys = [official_key()]
    if not third_party_enabled:
        return keys
    for path in third_party_paths:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise PackageError(
                f"THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS: cannot read {path}: {exc.strerror}"
            ) from None
        try:
            keys.append(third_party_key(pem, Path(path).name))
        except PackageError as exc:
            raise PackageError(f"THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS: {path}: {exc.message}") from None
    return keys


def describe(keys: Iterable[TrustedKey]) -> str:
    labels = [key.label for key in keys]
    return ", ".join(labels) if labels else "none"
