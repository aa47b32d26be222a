"""Signatures in the zip comment: the real Marketplace package and Dify's official key, tampering,
unsigned packages and wrong keys; the rules that close what Go's check leaves open (a renamed
verification file, swapped file names); and signing, in the format of §6."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from plugin_daemon.packages import (
    PackageError,
    TrustedKey,
    decode_package,
    generate_key_pair,
    load_keyring,
    official_key,
    sign_package,
)
from plugin_daemon.packages.keyring import third_party_key

from tests.core.packages.packages_helpers import checksum_by_the_spec, tool_plugin, zip_entries, zip_files

MARKETPLACE_PACKAGE = Path(__file__).parent / "data" / "langgenius-agent_0.0.14.difypkg"
MARKETPLACE_IDENTIFIER = "langgenius/agent:0.0.14@26958a0e80a10655ce73812bdb7c35a66ce7b16f5ac346d298bda17ff85efd1e"


def key_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return key_pair()


@pytest.fixture(scope="module")
def other_keys() -> tuple[bytes, bytes]:
    return key_pair()


@pytest.fixture(scope="module")
def ours(keys: tuple[bytes, bytes]) -> TrustedKey:
    return third_party_key(keys[1], "ours.public.pem")


@pytest.fixture(scope="module")
def signed(keys: tuple[bytes, bytes]) -> bytes:
    return sign_package(zip_files(tool_plugin()), keys[0], authorized_category="community")


def sorted_plugin() -> list[tuple[str, bytes]]:
    return sorted(tool_plugin().items())


def signed_by_the_spec(files: list[tuple[str, bytes]], private_pem: bytes, signed_at: int = 1700000000) -> bytes:
    """§6 written out again: sign sha256(content) of each entry in zip order, then the time as text."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    data = b"".join(hashlib.sha256(content).digest() for _, content in files) + str(signed_at).encode()
    signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    comment = json.dumps({"signature": base64.b64encode(signature).decode(), "time": signed_at})
    return zip_files(files, comment=comment.encode())


def comment_of(data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.comment


def with_entries(data: bytes, entries: list[tuple[str, bytes]]) -> bytes:
    """Other entries, the same zip comment (what an attacker can make of a signed package)."""
    return zip_files(entries, comment=comment_of(data))


def refusal(data: bytes, keys: list[TrustedKey]) -> str:
    with pytest.raises(PackageError) as caught:
        decode_package(data, keys=keys, require_signature=True)
    return caught.value.message


# --- the real Marketplace package and Dify's official key -------------------------------------
def test_the_marketplace_package_verifies_with_the_official_key() -> None:
    decoded = decode_package(MARKETPLACE_PACKAGE.read_bytes(), keys=[official_key()], require_signature=True)
    assert str(decoded.identifier) == MARKETPLACE_IDENTIFIER
    assert decoded.declaration["verified"] is True
    assert decoded.verification == {"authorized_category": "langgenius"}  # signed before the file existed


def test_the_official_key_is_always_tried_first(ours: TrustedKey, keys: tuple[bytes, bytes], tmp_path: Path) -> None:
    path = tmp_path / "ours.public.pem"
    path.write_bytes(keys[1])
    assert [key.label for key in load_keyring(False, [str(path)])] == ["Dify's official key"]
    keyring = load_keyring(True, [str(path)])
    assert [key.label for key in keyring] == ["Dify's official key", "third-party key 'ours.public.pem'"]
    assert [key.official for key in keyring] == [True, False]
    decoded = decode_package(MARKETPLACE_PACKAGE.read_bytes(), keys=keyring, require_signature=True)
    assert decoded.verification == {"authorized_category": "langgenius"}


def test_one_changed_byte_is_refused_naming_the_keys_tried(ours: TrustedKey) -> None:
    data = MARKETPLACE_PACKAGE.read_bytes()
    entries = list(zip_entries(data).items())
    name, content = entries[5]
    assert name == "main.py"
    entries[5] = (name, content[:10] + bytes([content[10] ^ 1]) + content[11:])
    tampered = with_entries(data, entries)

    assert decode_package(tampered, keys=[official_key()]).verification is None
    assert refusal(tampered, [official_key()]) == (
        "the package signature is required but could not be verified (keys tried: Dify's official key):"
        " the signature does not match the package with any of these keys"
    )
    assert "(keys tried: Dify's official key, third-party key 'ours.public.pem')" in refusal(
        tampered, [official_key(), ours]
    )


# --- packages signed with a third-party key ---------------------------------------------------
def test_good_signature_verifies(signed: bytes, ours: TrustedKey) -> None:
    decoded = decode_package(signed, keys=[official_key(), ours], require_signature=True)
    assert decoded.verification == {"authorized_category": "community"}
    assert decoded.declaration["verified"] is True
    assert ".verification.dify.json" in decoded.files
    assert decoded.checksum == checksum_by_the_spec(signed)  # the verification file counts


def test_sign_package_writes_the_format_of_the_spec(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        names = archive.namelist()
        claim = json.loads(archive.comment)
    entries = zip_entries(signed)
    assert names == [*sorted(tool_plugin()), ".verification.dify.json"]  # sorted: it came unsorted
    assert json.loads(entries[".verification.dify.json"]) == {"authorized_category": "community"}
    assert set(claim) == {"signature", "time"} and isinstance(claim["time"], int)
    public = serialization.load_pem_public_key(keys[1])
    assert isinstance(public, rsa.RSAPublicKey)
    data = b"".join(hashlib.sha256(entries[name]).digest() for name in names) + str(claim["time"]).encode()
    public.verify(base64.b64decode(claim["signature"]), data, padding.PKCS1v15(), hashes.SHA256())


def test_a_package_signed_by_the_spec_verifies(keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    files = [*sorted_plugin(), (".verification.dify.json", b'{"authorized_category":"partner"}')]
    decoded = decode_package(signed_by_the_spec(files, keys[0]), keys=[ours])
    assert decoded.verification == {"authorized_category": "partner"}


GO_PACKAGER_ORDERS = {
    "by path (Go's packager since 2026)": lambda name: name,
    "by path with '\\' (the same packager on Windows)": lambda name: name.replace("/", "\\"),
    "folder by folder (Go's packager before, filepath.WalkDir)": lambda name: name.split("/"),
}


def test_every_order_a_go_packager_writes_verifies(keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    files = [*sorted_plugin(), *((name, f"# {name}\n".encode()) for name in ("a.py", "a/x.py", "a1.py"))]
    verification = (".verification.dify.json", b'{"authorized_category":"community"}')
    layouts = []
    for order, sort_key in GO_PACKAGER_ORDERS.items():
        laid_out = sorted(files, key=lambda entry, sort_key=sort_key: sort_key(entry[0]))  # type: ignore[misc]
        layouts.append([name for name, _ in laid_out])
        decoded = decode_package(signed_by_the_spec([*laid_out, verification], keys[0]), keys=[ours])
        assert decoded.verification == {"authorized_category": "community"}, order
    assert len({tuple(layout) for layout in layouts}) == 3  # three different layouts of the same files


def test_any_of_several_keys_may_verify(signed: bytes, other_keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    other = third_party_key(other_keys[1], "other.pem")
    decoded = decode_package(signed, keys=[official_key(), other, ours], require_signature=True)
    assert decoded.declaration["verified"] is True


def test_tampered_package_does_not_verify(signed: bytes, ours: TrustedKey) -> None:
    entries = zip_entries(signed)
    entries["main.py"] = b"import os; os.system('evil')\n"
    tampered = with_entries(signed, list(entries.items()))
    decoded = decode_package(tampered, keys=[ours])
    assert decoded.verification is None and decoded.declaration["verified"] is False
    assert refusal(tampered, [ours]).endswith("the signature does not match the package with any of these keys")


def test_tampered_time_does_not_verify(signed: bytes, ours: TrustedKey) -> None:
    claim = json.loads(comment_of(signed))
    claim["time"] += 1
    data = zip_files(zip_entries(signed), comment=json.dumps(claim).encode())
    assert decode_package(data, keys=[ours]).verification is None


def test_wrong_key(signed: bytes, other_keys: tuple[bytes, bytes]) -> None:
    other = third_party_key(other_keys[1], "other.pem")
    assert decode_package(signed, keys=[official_key(), other]).verification is None
    assert "keys tried: Dify's official key, third-party key 'other.pem'" in refusal(signed, [official_key(), other])


def test_unsigned_package(ours: TrustedKey) -> None:
    data = zip_files(tool_plugin())
    assert decode_package(data, keys=[official_key(), ours]).verification is None
    assert refusal(data, [official_key(), ours]) == (
        "the package signature is required but could not be verified"
        " (keys tried: Dify's official key, third-party key 'ours.public.pem'): the package is not signed"
    )


def test_signature_required_without_keys(signed: bytes) -> None:
    assert decode_package(signed).verification is None
    assert refusal(signed, []) == (
        "the package signature is required but could not be verified (keys tried: none):"
        " no public key is configured to check its signature"
    )


def test_comment_that_is_not_a_signature(ours: TrustedKey) -> None:
    data = zip_files(tool_plugin(), comment=b"built by hand")
    assert decode_package(data, keys=[ours]).verification is None
    assert "the zip comment is not a signature" in refusal(data, [ours])


# --- attack (a): a renamed verification file ---------------------------------------------------
def test_a_renamed_verification_file_is_not_taken_for_langgenius(signed: bytes, ours: TrustedKey) -> None:
    """Go reports this community package, its .verification.dify.json renamed, as langgenius."""
    entries = list(zip_entries(signed).items())
    assert entries[-1][0] == ".verification.dify.json"
    entries[-1] = ("zz-notes.json", entries[-1][1])  # still sorts last, so the order rule alone would pass
    renamed = with_entries(signed, entries)

    decoded = decode_package(renamed, keys=[official_key(), ours])
    assert decoded.verification is None and decoded.declaration["verified"] is False
    assert refusal(renamed, [official_key(), ours]).endswith(
        "the signature matches third-party key 'ours.public.pem', but it is signed with third-party key"
        " 'ours.public.pem' but has no .verification.dify.json; only Dify's official key may vouch for a"
        " package without one"
    )


def test_only_the_official_key_vouches_without_a_verification_file(keys: tuple[bytes, bytes]) -> None:
    data = signed_by_the_spec(sorted_plugin(), keys[0])
    third_party = third_party_key(keys[1], "ours.public.pem")
    assert decode_package(data, keys=[third_party]).verification is None
    # the same signature, had it been the official key's: the historical langgenius default
    as_official = TrustedKey("Dify's official key", third_party.key, official=True)
    assert decode_package(data, keys=[as_official]).verification == {"authorized_category": "langgenius"}


def test_an_official_package_with_its_verification_file_renamed_is_not_verified(keys: tuple[bytes, bytes]) -> None:
    record = b'{"authorized_category":"community"}'
    data = signed_by_the_spec([*sorted_plugin(), ("zz-record.json", record)], keys[0])
    as_official = TrustedKey("Dify's official key", third_party_key(keys[1], "k").key, official=True)
    decoded = decode_package(data, keys=[as_official])
    assert decoded.verification is None
    assert refusal(data, [as_official]).endswith(
        "but its entry 'zz-record.json' holds a verification record: .verification.dify.json was renamed"
    )


def test_the_verification_file_must_be_last(keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    files = [(".verification.dify.json", b'{"authorized_category":"partner"}'), *sorted_plugin()]
    data = signed_by_the_spec(files, keys[0])
    assert refusal(data, [ours]).endswith(".verification.dify.json is not its last entry, where the signer puts it")


def test_a_malformed_verification_file_is_not_verified(keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    data = signed_by_the_spec([*sorted_plugin(), (".verification.dify.json", b'{"authorized_category": 3}')], keys[0])
    assert decode_package(data, keys=[ours]).verification is None
    assert refusal(data, [ours]).endswith(
        '.verification.dify.json is not JSON like {"authorized_category": "community"}'
    )


# --- attack (b): swapped names -----------------------------------------------------------------
def test_two_code_files_with_swapped_names_are_refused(signed: bytes, ours: TrustedKey) -> None:
    """The signature covers contents in entry order, not names: Go still verifies this package."""
    entries = list(zip_entries(signed).items())
    names = [name for name, _ in entries]
    first, second = names.index("provider/demo.py"), names.index("tools/echo.py")
    entries[first], entries[second] = (names[second], entries[first][1]), (names[first], entries[second][1])
    swapped = with_entries(signed, entries)
    assert zip_entries(swapped)["tools/echo.py"] == b"class DemoProvider: ...\n"  # the swap took

    assert decode_package(swapped, keys=[ours]).verification is None
    assert refusal(swapped, [ours]).endswith(
        "the signature matches third-party key 'ours.public.pem', but its entries are not in the order a packager"
        " writes them (sorted by path), so files may have been renamed after signing"
    )


def test_a_swap_in_the_marketplace_package_is_refused() -> None:
    data = MARKETPLACE_PACKAGE.read_bytes()
    entries = list(zip_entries(data).items())
    names = [name for name, _ in entries]
    first, second = names.index("strategies/ReAct.py"), names.index("strategies/function_calling.py")
    entries[first], entries[second] = (names[second], entries[first][1]), (names[first], entries[second][1])
    assert "its entries are not in the order a packager writes them" in refusal(
        with_entries(data, entries), [official_key()]
    )


def test_folder_entries_in_a_signed_package_are_refused(keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    files = [("_assets/", b""), *sorted_plugin(), (".verification.dify.json", b'{"authorized_category":"community"}')]
    data = signed_by_the_spec([entry for entry in files if entry[0] != "_assets/"], keys[0])
    with_folder = with_entries(data, files)
    assert "it has folder entries ('_assets/')" in refusal(with_folder, [ours])


# --- keys and signing --------------------------------------------------------------------------
def test_bad_public_keys_are_reported(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="third-party key 'x.pem' is not a PEM-encoded public key"):
        third_party_key(b"not a key", "x.pem")
    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = ec_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(PackageError, match="third-party key 'ec.pem' is not an RSA key"):
        third_party_key(pem, "ec.pem")
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        PackageError, match=r"THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS: cannot read .*missing\.pem"
    ):
        load_keyring(True, [str(missing)])


def test_resigning_replaces_the_verification_file(signed: bytes, keys: tuple[bytes, bytes], ours: TrustedKey) -> None:
    resigned = sign_package(signed, keys[0], authorized_category="partner")
    with zipfile.ZipFile(io.BytesIO(resigned)) as archive:
        assert archive.namelist().count(".verification.dify.json") == 1
    assert decode_package(resigned, keys=[ours]).verification == {"authorized_category": "partner"}


def test_sign_package_rejects_a_bad_private_key_and_category(keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(PackageError, match="the private key is not an unencrypted PEM-encoded private key"):
        sign_package(zip_files(tool_plugin()), b"nope", authorized_category="community")
    with pytest.raises(PackageError, match="authorized category 'official' is not one of langgenius, partner"):
        sign_package(zip_files(tool_plugin()), keys[0], authorized_category="official")


def test_generated_keys_are_pkcs1_as_go_writes_them() -> None:
    private, public = generate_key_pair(key_size=2048)
    assert private.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert public.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    signed = sign_package(zip_files(tool_plugin()), private, authorized_category="langgenius")
    decoded = decode_package(signed, keys=[third_party_key(public, "new.pem")], require_signature=True)
    assert decoded.verification == {"authorized_category": "langgenius"}
