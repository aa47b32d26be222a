"""``plugin-daemon gc``: folders that no installation needs any more (uninstalled plugins, failed
installs), listed with ``--dry-run``, removed otherwise, only while the daemon is stopped.

Each runtime says what it keeps on disk that no installed identifier names
(:meth:`plugin_daemon.runtime.Runtime.leftovers`). Packages are never removed (README, "What to
back up").
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click
import httpx

from plugin_daemon.config import load_settings
from plugin_daemon.daemon_client import Connection


def folder_size(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


def daemon_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health/check", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def gc(dry_run: bool) -> None:
    """Remove the environments and extracted folders of plugins no installation uses."""
    from plugin_daemon.daemon import Daemon

    settings = load_settings()
    if not dry_run:
        url = Connection.resolve(None, None, None).url
        if daemon_answers(url):
            raise click.ClickException(
                f"the daemon answers at {url}: stop it first (it may be building one of these folders), "
                "or use --dry-run"
            )
    daemon = Daemon(settings)
    installed = set(daemon.manager.installed_identifiers())
    leftovers = [
        folder for runtime in daemon.control_panel.runtimes.values() for folder in runtime.leftovers(installed)
    ]
    total = 0
    for folder in leftovers:
        size = folder_size(folder)
        total += size
        if dry_run:
            click.echo(f"would remove {folder} ({size / 2**20:.1f} MiB)")
            continue
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            click.echo(f"could not remove {folder}: {exc.strerror or exc}", err=True)
            continue
        click.echo(f"removed {folder} ({size / 2**20:.1f} MiB)")
    verb = "would free" if dry_run else "freed"
    click.echo(f"{len(leftovers)} folder(s), {verb} {total / 2**20:.1f} MiB")
