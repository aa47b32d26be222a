"""``plugin-daemon connector``: run an SRI-compatible serverless connector."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_PORT = 5004


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True, help="Port to listen on.")
@click.option(
    "--api-key",
    envvar="DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY",
    required=True,
    help="Key callers send as the Authorization header (env DIFY_PLUGIN_SERVERLESS_CONNECTOR_API_KEY).",
)
@click.option(
    "--provider",
    envvar="SERVERLESS_CONNECTOR_PROVIDER",
    default="local",
    show_default=True,
    help="Where functions run: a driver of plugin_daemon.serverless.providers.",
)
@click.option(
    "--daemon-url",
    envvar="DIFY_PLUGIN_DAEMON_URL",
    default="http://127.0.0.1:5002",
    show_default=True,
    help="The daemon's URL, given to functions for their backwards calls (env DIFY_PLUGIN_DAEMON_URL).",
)
@click.option(
    "--home",
    envvar="SERVERLESS_CONNECTOR_HOME",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("serverless-connector-data"),
    show_default=True,
    help="The connector's state: packages and deployed functions.",
)
@click.option(
    "--working-path",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where package environments are built (default <home>/cwd).",
)
@click.option("--public-url", default=None, help="Base URL of this connector as the daemon reaches it.")
@click.option(
    "--idle-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds a function may stay idle before it is stopped (scale to zero).",
)
@click.option("--start-timeout", type=float, default=120.0, show_default=True, help="Seconds a cold start may take.")
@click.option(
    "--function-timeout",
    type=float,
    default=900.0,
    show_default=True,
    help="Seconds one call to a function may last (a cloud provider caps it at its own limit).",
)
@click.option(
    "--signing-secret",
    envvar="DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET",
    default="",
    help="Refuse calls not signed with this secret (env DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET).",
)
@click.option("--log-level", default="info", show_default=True)
def connector(
    host: str,
    port: int,
    api_key: str,
    provider: str,
    daemon_url: str,
    home: Path,
    working_path: Path | None,
    public_url: str | None,
    idle_timeout: float,
    start_timeout: float,
    function_timeout: float,
    signing_secret: str,
    log_level: str,
) -> None:
    """Run a serverless connector (SRI) that deploys plugins as functions on PROVIDER."""
    from plugin_daemon.init_process import become_init_if_pid_1

    become_init_if_pid_1()  # its functions run the SDK, which exits when its parent is PID 1

    import uvicorn
    from plugin_daemon.config import PUBLIC_DEFAULT_KEYS
    from plugin_daemon.logs import configure_logging

    from .app import create_connector_app
    from .options import ConnectorOptions
    from .provider import load_provider, provider_names

    api_key = api_key.strip()
    if not api_key or api_key in PUBLIC_DEFAULT_KEYS:
        raise click.ClickException("--api-key must be a secret of your own")
    if provider not in provider_names():
        raise click.ClickException(f"unknown provider {provider!r} (installed: {', '.join(provider_names())})")
    if public_url is None:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        public_url = f"http://{shown}:{port}"
    options = ConnectorOptions(
        api_key=api_key,
        public_url=public_url,
        home=home.resolve(),
        daemon_url=daemon_url,
        working_path=working_path,
        idle_timeout=idle_timeout,
        start_timeout=start_timeout,
        function_timeout=function_timeout,
        signing_secret=signing_secret,
    )
    configure_logging(log_level)
    try:
        loaded = load_provider(provider, options)
    except ValueError as exc:  # a provider's own settings are missing or wrong
        raise click.ClickException(str(exc)) from exc
    app = create_connector_app(loaded, options)
    click.echo(
        f"serverless connector ({provider}) on {public_url}; functions call the daemon at {daemon_url}", err=True
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False, timeout_graceful_shutdown=10)
