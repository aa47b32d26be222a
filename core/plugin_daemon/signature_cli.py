"""``plugin-daemon signature generate|sign|verify``: Go's ``dify signature`` commands, same arguments and files.

- ``generate [-f NAME]`` writes ``NAME.private.pem`` and ``NAME.public.pem`` (RSA-4096, PKCS#1 PEM;
  NAME defaults to ``dify_plugin_signing_key``). Unlike Go, it never overwrites a key and the private
  key is readable by its owner only.
- ``sign PACKAGE -p PRIVATE_KEY [-c CATEGORY]`` writes ``<name>.signed.difypkg`` next to PACKAGE, with
  ``.verification.dify.json`` saying CATEGORY (``langgenius`` by default, as in Go; or partner, community).
- ``verify PACKAGE [-p PUBLIC_KEY]`` checks it with that key, or with Dify's official key when none is given.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True, soft_wrap=True)
DEFAULT_KEY_PAIR_NAME = "dify_plugin_signing_key"
CATEGORIES = ("langgenius", "partner", "community")
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def key_file_option(name: str, description: str, *, required: bool) -> Callable[[F], F]:
    """``-p`` / ``--<name>`` (Go's spelling, with an underscore) / ``--<name-with-dash>``: a key file."""
    return click.option(
        "-p", f"--{name}", f"--{name.replace('_', '-')}", name, required=required, type=FILE, help=description
    )


@click.group()
def signature() -> None:
    """Sign plugin packages and verify their signatures (as Go's `dify signature`)."""


@signature.command()
@click.option("-f", "--filename", default="", help=f"Base name of the key files (default {DEFAULT_KEY_PAIR_NAME}).")
def generate(filename: str) -> None:
    """Generate an RSA-4096 key pair: NAME.private.pem and NAME.public.pem."""
    from plugin_daemon.packages import generate_key_pair

    name = filename or DEFAULT_KEY_PAIR_NAME
    private_path, public_path = Path(f"{name}.private.pem"), Path(f"{name}.public.pem")
    for path in (private_path, public_path):
        if path.exists():
            raise click.ClickException(f"{path} exists already; choose another name with -f")
    with console.status("generating an RSA-4096 key pair..."):
        private, public = generate_key_pair()
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(public)
    console.print(f"key pair generated: private key {private_path} (keep it secret), public key {public_path}")


@signature.command()
@click.argument("package_file", type=FILE)
@key_file_option("private_key", "The private key file (PEM).", required=True)
@click.option(
    "-c",
    "--authorized_category",
    "--authorized-category",
    "category",
    default="langgenius",
    show_default=True,
    help="The category the signature vouches for: langgenius, partner or community.",
)
def sign(package_file: Path, private_key: Path, category: str) -> None:
    """Sign PACKAGE_FILE; writes <name>.signed.difypkg next to it."""
    from plugin_daemon.packages import PackageError, decode_package, sign_package

    if category.lower() not in CATEGORIES:
        raise click.ClickException(f"invalid authorized category {category!r}: use one of {', '.join(CATEGORIES)}")
    try:
        data = package_file.read_bytes()
        decode_package(data)  # a valid plugin package, as Go's signer checks first
        signed = sign_package(data, private_key.read_bytes(), authorized_category=category.lower())
    except PackageError as exc:
        raise click.ClickException(exc.message) from None
    target = package_file.with_name(f"{package_file.stem}.signed{package_file.suffix}")
    target.write_bytes(signed)
    console.print(f"plugin signed: {target}")


@signature.command()
@click.argument("package_file", type=FILE)
@key_file_option("public_key", "The public key file (PEM); Dify's official key when omitted.", required=False)
def verify(package_file: Path, public_key: Path | None) -> None:
    """Verify PACKAGE_FILE's signature with PUBLIC_KEY, or with Dify's official key."""
    from plugin_daemon.packages import PackageError, decode_package, official_key
    from plugin_daemon.packages.keyring import third_party_key

    try:
        key = official_key() if public_key is None else third_party_key(public_key.read_bytes(), public_key.name)
        decoded = decode_package(package_file.read_bytes(), keys=[key], require_signature=True)
    except PackageError as exc:
        raise click.ClickException(exc.message) from None
    assert decoded.verification is not None
    category = decoded.verification["authorized_category"]
    console.print(f"plugin verified with {key.label}; authorized category: {category}")
