"""Package signatures: RSA PKCS#1 v1.5 / SHA-256 over the entries' hashes, kept in the zip comment.

Signed data = sha256(content) of every entry in zip order (``.verification.dify.json`` included,
the comment not), then the signing time as decimal text (decoder/verifier.go, withkey/sign_with_key.go).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .archive import Archive, read_archive, write_archive
from .errors import PackageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

# cryptography (about 10 MB resident) is imported where a signature is actually checked or made,
# not when the daemon starts: most daemons never see a signed package.

VERIFICATION_FILE = ".verification.dify.json"
DEFAULT_AUTHORIZED_CATEGORY = "langgenius"  # a verified package without the file: signed by Dify itself


@dataclass(frozen=True)
class SignatureCheck:
    verified: bool
    reason: str  # why not verified; empty when verified


def signed_data(files: Mapping[str, bytes], signed_at: int) -> bytes:
    digests = b"".join(hashlib.sha256(content).digest() for content in files.values())
    return digests + str(signed_at).encode("ascii")


def load_public_keys(pems: Sequence[bytes]) -> list[rsa.RSAPublicKey]:
    if not pems:
        return []
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    keys = []
    for index, pem in enumerate(pems, start=1):
        try:
            key = serialization.load_pem_public_key(bytes(pem))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise PackageError(f"public key #{index} is not a PEM-encoded public key") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise PackageError(f"public key #{index} is not an RSA key")
        keys.append(key)
    return keys


def check_signature(archive: Archive, keys: Sequence[rsa.RSAPublicKey]) -> SignatureCheck:
    if not archive.comment.strip():
        return SignatureCheck(False, "the package is not signed")
    try:
        claim = json.loads(archive.comment)
        signature = base64.b64decode(claim["signature"], validate=True)
        signed_at = claim["time"]
        if not isinstance(signed_at, int) or isinstance(signed_at, bool):
            raise TypeError
    except (ValueError, KeyError, TypeError, binascii.Error):
        return SignatureCheck(False, 'the zip comment is not a signature of the form {"signature": ..., "time": ...}')
    if not keys:
        return SignatureCheck(False, "no public key is configured to check its signature")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    data = signed_data(archive.files, signed_at)
    for key in keys:
        try:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return SignatureCheck(True, "")
    return SignatureCheck(
        False,
        "the signature does not match the package for any of the keys (bad signature or untrusted signer)",
    )


def verification_record(files: Mapping[str, bytes]) -> dict[str, str]:
    """``{"authorized_category": ...}`` of a verified package."""
    content = files.get(VERIFICATION_FILE)
    if content is None:
        return {"authorized_category": DEFAULT_AUTHORIZED_CATEGORY}
    try:
        record = json.loads(content)
        category = record["authorized_category"]
        if not isinstance(category, str) or not category:
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise PackageError(f'{VERIFICATION_FILE} must be JSON like {{"authorized_category": "community"}}') from None
    return {"authorized_category": category}


def sign_package(data: bytes, private_key_pem: bytes, *, authorized_category: str = "community") -> bytes:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    """Return ``data`` re-zipped with a ``.verification.dify.json`` and signed in the zip comment."""
    archive = read_archive(data)
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PackageError("the private key is not an unencrypted PEM-encoded private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PackageError("the private key is not an RSA key")
    files = {name: content for name, content in archive.files.items() if name != VERIFICATION_FILE}
    files[VERIFICATION_FILE] = json.dumps({"authorized_category": authorized_category}, separators=(",", ":")).encode()
    signed_at = int(time.time())
    signature = key.sign(signed_data(files, signed_at), padding.PKCS1v15(), hashes.SHA256())
    comment = json.dumps(
        {"signature": base64.b64encode(signature).decode("ascii"), "time": signed_at}, separators=(",", ":")
    )
    return write_archive(files.items(), comment=comment.encode("ascii"))
