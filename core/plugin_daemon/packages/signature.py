"""Package signatures: verify the RSA signature in the zip comment, as strictly as Go and a bit more.

The format (Go's ``decoder/verifier.go`` and ``signer/withkey/sign_with_key.go``): the zip comment is
``{"signature": base64, "time": unix seconds}``; the signature is RSA PKCS#1 v1.5 / SHA-256 over
sha256(content) of every entry in zip order (``.verification.dify.json`` included), then the time as
decimal text. The signer puts ``.verification.dify.json`` (``{"authorized_category": ...}``) last.

What Go's check leaves open, and the rules here that close it
-------------------------------------------------------------
The signature covers the entries' contents in order, not their names. So a signed package whose
names were changed after signing still verifies in Go:

1. Renaming ``.verification.dify.json`` (say a third-party ``community`` package) left a package
   "without a verification file", which Go reports as the ``langgenius`` category (the historical
   default for packages Dify signed before the file existed). Here:
   - only Dify's official key may vouch for a package without a verification file (every signer
     that uses another key writes the file: Go's ``dify signature sign`` always does);
   - a package without the file in which another entry holds a verification record (the renamed
     file) is not verified.
2. Swapping two files' names (``a.py`` <-> ``b.py``) kept the order of contents, so the signature
   still matched while the code under each name changed. Here the entries must be in an order a
   packager writes: every packager that feeds the signer writes its files sorted, and the signer
   keeps their order and appends ``.verification.dify.json``. Accepted orders (any one of them):
   - by path, byte-wise, with '/' (Go's ``dify plugin package`` since 2026, this project's
     ``plugin-daemon package``);
   - by path with '\\' as the separator (the same Go packager run on Windows);
   - folder by folder, names sorted in each (Go's packager before 2026: ``filepath.WalkDir``);
   and ``.verification.dify.json``, when present, is last. Swapping two names puts them out of
   order in every one of these, unless the two orders disagree on them (a file and a folder with a
   shared prefix, like ``x.py`` and ``x/``): that narrow re-mapping is all that is left open.
   Folder entries make Go's verifier fail, so a signed package with one is not verified either.

A package that breaks one of these rules is "not verified" (installable only with forcing off, as
an unsigned one); the reason says which rule. Verification is not on any call path (upload only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .archive import Archive
from .keyring import TrustedKey

VERIFICATION_FILE = ".verification.dify.json"
DEFAULT_AUTHORIZED_CATEGORY = "langgenius"  # the official key's package without the file: signed by Dify itself
_RECORD_SIZE_LIMIT = 4096  # a verification record is a few dozen bytes; bigger entries are not looked into


@dataclass(frozen=True)
class SignatureCheck:
    verified: bool
    reason: str  # why not verified; empty when verified
    key: TrustedKey | None = None  # the key that verified it
    verification: dict[str, str] | None = None  # {"authorized_category": ...} when verified


def signed_data(contents: Sequence[bytes], signed_at: int) -> bytes:
    digests = b"".join(hashlib.sha256(content).digest() for content in contents)
    return digests + str(signed_at).encode("ascii")


def _parse_claim(comment: bytes) -> tuple[bytes, int] | None:
    try:
        claim = json.loads(comment)
        signature = base64.b64decode(claim["signature"], validate=True)
        signed_at = claim["time"]
        if not isinstance(signed_at, int) or isinstance(signed_at, bool):
            raise TypeError
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return signature, signed_at


def _signing_key(signature: bytes, data: bytes, keys: Sequence[TrustedKey]) -> TrustedKey | None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    for trusted in keys:
        try:
            trusted.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return trusted
    return None


# --- the order packagers write -----------------------------------------------------------
def _by_path(name: str) -> str:
    return name


def _by_windows_path(name: str) -> str:
    return name.replace("/", "\\")


def _folder_by_folder(name: str) -> tuple[str, ...]:
    return tuple(name.split("/"))


PACKAGER_ORDERS: tuple[Callable[[str], Any], ...] = (_by_path, _by_windows_path, _folder_by_folder)


def in_packager_order(names: Sequence[str]) -> bool:
    """True when ``names`` are sorted in one of the orders of PACKAGER_ORDERS."""
    return any(
        all(order(before) < order(after) for before, after in zip(names, names[1:], strict=False))
        for order in PACKAGER_ORDERS
    )


def entry_order_problem(entry_names: Sequence[str]) -> str:
    """Why the entries are not laid out as a packager and Go's signer write them ('' when they are)."""
    folders = [name for name in entry_names if name.endswith("/")]
    if folders:
        return (
            f"it has folder entries ({folders[0]!r}); a signed package holds only files"
            " (Go's verifier cannot read folder entries either)"
        )
    names = list(entry_names)
    if VERIFICATION_FILE in names:
        if names[-1] != VERIFICATION_FILE:
            return f"{VERIFICATION_FILE} is not its last entry, where the signer puts it"
        names.pop()
    if not in_packager_order(names):
        return (
            "its entries are not in the order a packager writes them (sorted by path), so files"
            " may have been renamed after signing"
        )
    return ""


# --- the verification record -------------------------------------------------------------
def _record_category(content: bytes) -> str | None:
    """The authorized_category of a verification record, or None when ``content`` is not one."""
    try:
        record = json.loads(content)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    category = record.get("authorized_category")
    return category if isinstance(category, str) and category else None


def _disguised_record(files: Mapping[str, bytes]) -> str | None:
    """The name of an entry that holds a verification record under another name."""
    for name, content in files.items():
        if name == VERIFICATION_FILE or len(content) > _RECORD_SIZE_LIMIT or not content.lstrip().startswith(b"{"):
            continue
        try:
            record = json.loads(content)
        except ValueError:
            continue
        if isinstance(record, dict) and "authorized_category" in record:
            return name
    return None


def _verification(files: Mapping[str, bytes], key: TrustedKey) -> tuple[dict[str, str] | None, str]:
    content = files.get(VERIFICATION_FILE)
    if content is not None:
        category = _record_category(content)
        if category is None:
            return None, f'{VERIFICATION_FILE} is not JSON like {{"authorized_category": "community"}}'
        return {"authorized_category": category}, ""
    if not key.official:
        return None, (
            f"it is signed with {key.label} but has no {VERIFICATION_FILE}; only Dify's official key"
            " may vouch for a package without one"
        )
    renamed = _disguised_record(files)
    if renamed is not None:
        return None, f"its entry {renamed!r} holds a verification record: {VERIFICATION_FILE} was renamed"
    return {"authorized_category": DEFAULT_AUTHORIZED_CATEGORY}, ""


def check_signature(archive: Archive, keys: Sequence[TrustedKey]) -> SignatureCheck:
    """Whether one of ``keys`` signed ``archive`` as it is, and with what authorized category."""
    if not archive.comment.strip():
        return SignatureCheck(False, "the package is not signed")
    claim = _parse_claim(archive.comment)
    if claim is None:
        return SignatureCheck(False, 'the zip comment is not a signature of the form {"signature": ..., "time": ...}')
    if not keys:
        return SignatureCheck(False, "no public key is configured to check its signature")
    signature, signed_at = claim
    key = _signing_key(signature, signed_data(list(archive.files.values()), signed_at), keys)
    if key is None:
        return SignatureCheck(False, "the signature does not match the package with any of these keys")
    problem = entry_order_problem(archive.entry_names or tuple(archive.files))
    if problem:
        return SignatureCheck(False, f"the signature matches {key.label}, but {problem}", key)
    verification, problem = _verification(archive.files, key)
    if verification is None:
        return SignatureCheck(False, f"the signature matches {key.label}, but {problem}", key)
    return SignatureCheck(True, "", key, verification)
