"""The ``plugin-daemon`` command line: serve, package, and the registration of the other commands."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from rich.console import Console

from plugin_daemon import __version__, manage_cli
from plugin_daemon.config import Settings, SettingsError, load_settings
from plugin_daemon.extensions_cli import extensions, plugins_alias
from plugin_daemon.gc_cli import gc
from plugin_daemon.hardening import KEY_FILE
from plugin_daemon.plugins import load_extensions
from plugin_daemon.signature_cli import signature

console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("plugin_daemon")


def resolve_server_key(settings: Settings) -> None:
    """Use SERVER_KEY, else the key kept in the data folder, else make one, keep it, print it once."""
    if settings.SERVER_KEY:
        settings.ensure_server_key()  # refuses a publicly known key
        return
    key_path = settings.home / KEY_FILE
    if key_path.is_file():
        object.__setattr__(settings, "SERVER_KEY", key_path.read_text().strip())
        log.info("using the server key kept in %s", key_path)
        return
    generated = settings.ensure_server_key()
    settings.home.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{generated}\n")
    log.warning(
        "No SERVER_KEY was set; generated one (shown this once, kept in %s): %s "
        "-- give it to the Dify API server as PLUGIN_DAEMON_KEY",
        key_path,
        generated,
    )


class DaemonGroup(click.Group):
    """Adds the commands that extensions register (``plugin_daemon_register_commands``)."""

    _loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            try:
                load_extensions(load_settings().disabled_extensions).add_commands(self)
            except SettingsError:
                pass  # the command itself reports the invalid setting
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
@click.option("--host", default=None, help="Address to listen on (SERVER_HOST, default 0.0.0.0).")
@click.option("--port", type=int, default=None, help="Port to listen on (SERVER_PORT, default 5002).")
@click.option("--access-log", is_flag=True, default=None, help="Log one line per HTTP request (ACCESS_LOG).")
def serve(host: str | None, port: int | None, access_log: bool | None) -> None:
    """Run the daemon (state under PLUGIN_STORAGE_LOCAL_ROOT, else ./plugin-daemon-data)."""
    from plugin_daemon.init_process import become_init_if_pid_1

    become_init_if_pid_1()  # as PID 1 (a container without an init), fork: the daemon runs as a child

    from plugin_daemon.api.app import create_app
    from plugin_daemon.connection_limits import http_limits, raise_open_file_limit
    from plugin_daemon.daemon import Daemon
    from plugin_daemon.go_settings import warnings_for
    from plugin_daemon.hardening import harden_process
    from plugin_daemon.logs import configure_logging
    from plugin_daemon.shutdown import serve_until_stopped
    from plugin_daemon.store.database import SchemaError

    settings = load_settings()
    if access_log:
        object.__setattr__(settings, "ACCESS_LOG", True)
    hardened = harden_process(settings)  # first: the umask covers the log file too
    configure_logging(settings.LOG_LEVEL, settings.LOG_OUTPUT_FORMAT, settings.LOG_FILE)
    log.info("%s", hardened)
    for warning in warnings_for():
        log.warning(warning)
    try:
        resolve_server_key(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    raise_open_file_limit()
    try:
        daemon = Daemon(settings)
    # a setting refused (PLUGIN_EXTRA_ENV naming a secret, a third-party signature key unread),
    # or a database this daemon cannot use
    except (ValueError, SchemaError) as exc:
        raise click.ClickException(str(exc)) from None
    names = ", ".join(sorted(daemon.control_panel.runtimes)) or "none"
    log.info("plugin-daemon %s: storage root %s, runtimes: %s", __version__, settings.home, names)
    serve_until_stopped(
        create_app(daemon),
        daemon.shutdown,
        settings.SERVER_SHUTDOWN_GRACE_PERIOD,
        host=host or settings.SERVER_HOST,
        port=port or settings.SERVER_PORT,
        log_config=None,  # the daemon's own log configuration (plugin_daemon.logs)
        log_level=settings.LOG_LEVEL.lower(),
        access_log=False,
        server_header=False,  # nothing reads them; each costs work on every response
        date_header=False,
        **http_limits(settings),
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


for command in (*manage_cli.COMMANDS, extensions, plugins_alias, gc, signature):
    cli.add_command(command)


def main() -> None:
    try:
        cli(prog_name="plugin-daemon")
    except SettingsError as exc:  # one line naming the setting, no traceback
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
