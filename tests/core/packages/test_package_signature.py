"""Signatures in the zip comment: good, tampered, unsigned, wrong key; and the signed data of §6."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from plugin_daemon.packages import PackageError, decode_package, sign_package

from tests.core.packages.packages_helpers import checksum_by_the_spec, tool_plugin, zip_entries, zip_files


def key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return key_pair()


@pytest.fixture(scope="module")
def other_keys() -> tuple[bytes, bytes]:
    return key_pair()


@pytest.fixture(scope="module")
def signed(keys: tuple[bytes, bytes]) -> bytes:
    return sign_package(zip_files(tool_plugin()), keys[0])


def signed_by_the_spec(files: list[tuple[str, bytes]], private_pem: bytes, signed_at: int) -> bytes:
    """§6 written out again: sign sha256(content) of each entry in zip order, then the time as text."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    data = b"".join(hashlib.sha256(content).digest() for _, content in files) + str(signed_at).encode()
    signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    comment = json.dumps({"signature": base64.b64encode(signature).decode(), "time": signed_at})
    return zip_files(files, comment=comment.encode())


def test_good_signature_verifies(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    decoded = decode_package(signed, public_keys=[keys[1]], require_signature=True)
    assert decoded.verification == {"authorized_category": "community"}
    assert decoded.declaration["verified"] is True
    assert ".verification.dify.json" in decoded.files
    assert decoded.checksum == checksum_by_the_spec(signed)  # the verification file counts


def test_sign_package_writes_the_format_of_the_spec(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        names = archive.namelist()
        claim = json.loads(archive.comment)
    entries = zip_entries(signed)
    assert names[-1] == ".verification.dify.json"
    assert json.loads(entries[".verification.dify.json"]) == {"authorized_category": "community"}
    assert set(claim) == {"signature", "time"} and isinstance(claim["time"], int)
    public = serialization.load_pem_public_key(keys[1])
    assert isinstance(public, rsa.RSAPublicKey)
    data = b"".join(hashlib.sha256(entries[name]).digest() for name in names) + str(claim["time"]).encode()
    public.verify(base64.b64decode(claim["signature"]), data, padding.PKCS1v15(), hashes.SHA256())


def test_a_package_signed_by_the_spec_verifies(keys: tuple[bytes, bytes]) -> None:
    files = [*tool_plugin().items(), (".verification.dify.json", b'{"authorized_category":"partner"}')]
    decoded = decode_package(signed_by_the_spec(files, keys[0], 1700000000), public_keys=[keys[1]])
    assert decoded.verification == {"authorized_category": "partner"}


def test_signed_without_verification_file_defaults_to_langgenius(keys: tuple[bytes, bytes]) -> None:
    data = signed_by_the_spec(list(tool_plugin().items()), keys[0], 1700000000)
    assert decode_package(data, public_keys=[keys[1]]).verification == {"authorized_category": "langgenius"}


def test_any_of_several_keys_may_verify(
    signed: bytes, keys: tuple[bytes, bytes], other_keys: tuple[bytes, bytes]
) -> None:
    decoded = decode_package(signed, public_keys=[other_keys[1], keys[1]], require_signature=True)
    assert decoded.declaration["verified"] is True


def tampered(signed: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        comment = archive.comment
    entries = zip_entries(signed)
    entries["main.py"] = b"import os; os.system('evil')\n"
    return zip_files(entries, comment=comment)


def test_tampered_package_does_not_verify(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    decoded = decode_package(tampered(signed), public_keys=[keys[1]])
    assert decoded.verification is None
    assert decoded.declaration["verified"] is False

    with pytest.raises(PackageError) as caught:
        decode_package(tampered(signed), public_keys=[keys[1]], require_signature=True)
    assert caught.value.message == (
        "package signature is required but could not be verified with 1 public key tried:"
        " the signature does not match the package for any of the keys (bad signature or untrusted signer)"
    )


def test_tampered_time_does_not_verify(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        claim = json.loads(archive.comment)
    claim["time"] += 1
    data = zip_files(zip_entries(signed), comment=json.dumps(claim).encode())
    assert decode_package(data, public_keys=[keys[1]]).verification is None


def test_wrong_key(signed: bytes, other_keys: tuple[bytes, bytes]) -> None:
    assert decode_package(signed, public_keys=[other_keys[1]]).verification is None
    with pytest.raises(PackageError, match="could not be verified with 1 public key tried: the signature does not"):
        decode_package(signed, public_keys=[other_keys[1]], require_signature=True)


def test_unsigned_package(keys: tuple[bytes, bytes], other_keys: tuple[bytes, bytes]) -> None:
    data = zip_files(tool_plugin())
    assert decode_package(data, public_keys=[keys[1]]).verification is None
    with pytest.raises(PackageError) as caught:
        decode_package(data, public_keys=[keys[1], other_keys[1]], require_signature=True)
    assert caught.value.message == (
        "package signature is required but could not be verified with 2 public keys tried: the package is not signed"
    )


def test_signature_required_without_keys(signed: bytes) -> None:
    assert decode_package(signed).verification is None
    with pytest.raises(PackageError) as caught:
        decode_package(signed, require_signature=True)
    assert caught.value.message == (
        "package signature is required but could not be verified with 0 public keys tried:"
        " no public key is configured to check its signature"
    )


def test_comment_that_is_not_a_signature(keys: tuple[bytes, bytes]) -> None:
    data = zip_files(tool_plugin(), comment=b"built by hand")
    assert decode_package(data, public_keys=[keys[1]]).verification is None
    with pytest.raises(PackageError, match="the zip comment is not a signature"):
        decode_package(data, public_keys=[keys[1]], require_signature=True)


def test_bad_public_keys_are_reported() -> None:
    with pytest.raises(PackageError, match="public key #1 is not a PEM-encoded public key"):
        decode_package(zip_files(tool_plugin()), public_keys=[b"not a key"])
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = ec_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(PackageError, match="public key #1 is not an RSA key"):
        decode_package(zip_files(tool_plugin()), public_keys=[pem])


def test_resigning_replaces_the_verification_file(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    resigned = sign_package(signed, keys[0], authorized_category="partner")
    with zipfile.ZipFile(io.BytesIO(resigned)) as archive:
        assert archive.namelist().count(".verification.dify.json") == 1
    assert decode_package(resigned, public_keys=[keys[1]]).verification == {"authorized_category": "partner"}


def test_sign_package_rejects_a_bad_private_key() -> None:
    with pytest.raises(PackageError, match="the private key is not an unencrypted PEM-encoded private key"):
        sign_package(zip_files(tool_plugin()), b"nope")
