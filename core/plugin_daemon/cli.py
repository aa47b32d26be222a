"""The ``plugin-daemon`` command line: serve, package, plugins (and what extensions add)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from plugin_daemon import __version__
from plugin_daemon.config import Settings, load_settings
from plugin_daemon.plugins import load_extensions

console = Console(stderr=True)
KEY_FILE = "server_key"


def configure_logging(level: str) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=level.upper(),
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=console, show_path=False, rich_tracebacks=False)],
    )


def resolve_server_key(settings: Settings) -> None:
    """Use SERVER_KEY, else the key kept in the data folder, else make one, keep it, print it once."""
    if settings.SERVER_KEY:
        settings.ensure_server_key()  # refuses a publicly known key
        return
    key_path = settings.home / KEY_FILE
    if key_path.is_file():
        object.__setattr__(settings, "SERVER_KEY", key_path.read_text().strip())
        console.print(f"[dim]using the server key kept in {key_path}[/dim]")
        return
    generated = settings.ensure_server_key()
    settings.home.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{generated}\n")
    console.print(
        "[bold yellow]No SERVER_KEY was set; generated one (shown this once, kept in "
        f"{key_path}):[/bold yellow]\n{generated}\n"
        "Give it to the Dify API server as PLUGIN_DAEMON_KEY."
    )


class DaemonGroup(click.Group):
    """Adds the commands that extensions register (``plugin_daemon_register_commands``)."""

    _loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            try:
                load_extensions(load_settings().disabled_extensions).add_commands(self)
            except Exception as exc:  # never make the CLI unusable because of one extension
                console.print(f"[red]extensions could not add their commands: {exc}[/red]")

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, cmd_name)


@click.group(cls=DaemonGroup)
@click.version_option(__version__, prog_name="plugin-daemon")
def cli() -> None:
    """plugin-daemon: runs Dify plugins behind the Dify plugin-daemon API."""


@cli.command()
@click.option("--host", default=None, help="Address to listen on (SERVER_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (SERVER_PORT, default 5002).")
def serve(host: str | None, port: int | None) -> None:
    """Run the daemon (state in PLUGIN_DAEMON_HOME, ./plugin-daemon-data by default)."""
    import uvicorn

    from plugin_daemon.api.app import create_app
    from plugin_daemon.daemon import Daemon

    settings = load_settings()
    configure_logging(settings.LOG_LEVEL)
    try:
        resolve_server_key(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    daemon = Daemon(settings)
    names = ", ".join(sorted(daemon.control_panel.runtimes)) or "none"
    console.print(f"plugin-daemon {__version__}: data in {settings.home}, runtimes: {names}")
    uvicorn.run(
        create_app(daemon),
        host=host or settings.SERVER_HOST,
        port=port or settings.SERVER_PORT,
        log_level=settings.LOG_LEVEL.lower(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Where to write the package.")
def package(folder: Path, output: Path | None) -> None:
    """Build a .difypkg from a plugin FOLDER (checked as the daemon will check it)."""
    from plugin_daemon.packages import PackageError, build_package, decode_package

    with console.status(f"packaging {folder}..."):
        try:
            data = build_package(folder)
            decoded = decode_package(data)
        except PackageError as exc:
            raise click.ClickException(exc.message) from None
    identifier = decoded.identifier
    target = output or Path(f"{identifier.name}-{identifier.version}.difypkg")
    target.write_bytes(data)
    console.print(f"wrote {target} ({len(data)} bytes); its unique identifier:", soft_wrap=True)
    click.echo(str(identifier))  # alone on stdout, for scripts


@cli.command()
def plugins() -> None:
    """List the extensions (runtimes, routes, services) this daemon loads."""
    settings = load_settings()
    manager = load_extensions(settings.disabled_extensions)
    table = Table("name", "module", "distribution", "version", "state")
    for extension in manager.extensions:
        state = "blocked" if extension.blocked else (f"error: {extension.error}" if extension.error else "loaded")
        table.add_row(extension.name, extension.module, extension.distribution, extension.version, state)
    Console().print(table)
    runtimes = ", ".join(sorted(manager.runtime_factories())) or "none"
    Console().print(f"runtimes: {runtimes}")


def main() -> None:
    cli(prog_name="plugin-daemon")


if __name__ == "__main__":
    sys.exit(main())
