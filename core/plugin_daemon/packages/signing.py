"""Making signatures: RSA key pairs and signed packages, in the forms Go's ``dify signature`` uses.

Keys are RSA-4096 in PKCS#1 PEM ("RSA PRIVATE KEY" / "RSA PUBLIC KEY"), so the Go daemon reads ours
and we read its. A package is signed as Go's signer does it (see signature.py for the format), with
one difference that keeps the result verifiable under this daemon's stricter rules: entries that are
not already in a packager's order are written sorted by path (Go keeps them as they came).
"""

from __future__ import annotations

import base64
import json
import time

from .archive import read_archive, write_archive
from .errors import PackageError
from .signature import VERIFICATION_FILE, in_packager_order, signed_data

KEY_SIZE = 4096
AUTHORIZED_CATEGORIES = ("langgenius", "partner", "community")


def generate_key_pair(key_size: int = KEY_SIZE) -> tuple[bytes, bytes]:
    """A new (private, public) RSA key pair, both PKCS#1 PEM."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return private, public


def sign_package(data: bytes, private_key_pem: bytes, *, authorized_category: str) -> bytes:
    """``data`` re-zipped with a ``.verification.dify.json`` (last) and its signature in the zip comment."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    if authorized_category not in AUTHORIZED_CATEGORIES:
        raise PackageError(
            f"authorized category {authorized_category!r} is not one of {', '.join(AUTHORIZED_CATEGORIES)}"
        )
    archive = read_archive(data)
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise PackageError("the private key is not an unencrypted PEM-encoded private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PackageError("the private key is not an RSA key")
    files = [(name, content) for name, content in archive.files.items() if name != VERIFICATION_FILE]
    if not in_packager_order([name for name, _ in files]):
        files.sort(key=lambda entry: entry[0])
    record = json.dumps({"authorized_category": authorized_category}, separators=(",", ":")).encode()
    files.append((VERIFICATION_FILE, record))
    signed_at = int(time.time())
    signature = key.sign(signed_data([content for _, content in files], signed_at), padding.PKCS1v15(), hashes.SHA256())
    comment = json.dumps(
        {"signature": base64.b64encode(signature).decode("ascii"), "time": signed_at}, separators=(",", ":")
    )
    return write_archive(files, comment=comment.encode("ascii"))
