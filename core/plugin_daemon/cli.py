"""The ``plugin-daemon`` command line: serve, package, plugins (and what extensions add)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from plugin_daemon import __version__
from plugin_daemon.config import Settings, SettingsError, load_settings
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
def serve(host: str | None, port: int | None) -> None:
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


@cli.command()
@click.argument("package_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tenant", required=True, help="The Dify tenant (workspace) id to install for.")
@click.option("--url", default=None, help="The daemon's URL (default http://SERVER_HOST:SERVER_PORT).")
@click.option("--key", default=None, help="The daemon's SERVER_KEY (default: from the environment or data folder).")
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait for the install.")
def install(package_file: Path, tenant: str, url: str | None, key: str | None, timeout: float) -> None:
    """Upload PACKAGE_FILE to a running daemon and install it for a tenant, showing progress."""
    import time

    import httpx

    settings = load_settings()
    if key is None:
        key_path = settings.home / KEY_FILE
        key = settings.SERVER_KEY or (key_path.read_text().strip() if key_path.is_file() else "")
    host = "127.0.0.1" if settings.SERVER_HOST in ("0.0.0.0", "::", "") else settings.SERVER_HOST
    base = url or f"http://{host}:{settings.SERVER_PORT}"
    with httpx.Client(base_url=base, headers={"X-Api-Key": key}, timeout=120) as client:

        def data_of(response: httpx.Response) -> object:
            body = response.json()
            if body.get("code") != 0:
                raise click.ClickException(str(body.get("message")))
            return body["data"]

        with console.status(f"uploading {package_file.name}..."):
            decoded = data_of(
                client.post(
                    f"/plugin/{tenant}/management/install/upload/package",
                    files={"dify_pkg": (package_file.name, package_file.read_bytes(), "application/octet-stream")},
                )
            )
        identifier = decoded["unique_identifier"]  # type: ignore[index]
        started = data_of(
            client.post(
                f"/plugin/{tenant}/management/install/identifiers",
                json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [{}]},
            )
        )
        if started["all_installed"]:  # type: ignore[index]
            console.print(f"{identifier} is installed for tenant {tenant} already")
            return
        task_id = started["task_id"]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        with console.status(f"installing {identifier}...") as status:
            while True:
                task = data_of(client.get(f"/plugin/{tenant}/management/install/tasks/{task_id}"))
                plugin = task["plugins"][0]  # type: ignore[index]
                status.update(f"installing {identifier}: {plugin['message']}")
                if task["status"] in ("success", "failed"):  # type: ignore[index]
                    break
                if time.monotonic() > deadline:
                    raise click.ClickException(f"the install did not finish within {timeout:g} s")
                time.sleep(0.5)
    if task["status"] == "failed":  # type: ignore[index]
        raise click.ClickException(f"install failed: {plugin['message']}")
    console.print(f"installed {identifier} for tenant {tenant}")


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


cli.add_command(signature)


def main() -> None:
    try:
        cli(prog_name="plugin-daemon")
    except SettingsError as exc:  # one line naming the setting, no traceback
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
