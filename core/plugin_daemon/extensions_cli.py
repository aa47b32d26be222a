"""``plugin-daemon extensions``: what this installation loads, and what each extension registers."""

from __future__ import annotations

import click
import orjson

from plugin_daemon.config import load_settings
from plugin_daemon.plugins import load_extensions


def describe_extensions() -> list[dict[str, object]]:
    manager = load_extensions(load_settings().disabled_extensions)
    described = []
    for extension in manager.extensions:
        loaded = not extension.blocked and not extension.error
        registers = manager.registrations(extension.name) if loaded else {}
        described.append({**extension.as_dict(), "registers": registers})
    return described


def state_of(extension: dict[str, object]) -> str:
    if extension["blocked"]:
        return "blocked"
    return f"error: {extension['error']}" if extension["error"] else "loaded"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def extensions(as_json: bool) -> None:
    """List the extensions this daemon loads and what each registers (runtimes, codecs, routes, services, commands)."""
    described = describe_extensions()
    if as_json:
        click.echo(orjson.dumps(described, option=orjson.OPT_INDENT_2).decode())
        return
    for extension in described:
        click.echo(f"{extension['name']}  {extension['distribution']} {extension['version']}  {state_of(extension)}")
        registers = extension["registers"]
        if isinstance(registers, dict):
            for kind, names in registers.items():
                if names:
                    click.echo(f"  {kind}: {', '.join(names)}")


#: ``plugins``, the command's old name, still works (hidden from the help).
plugins_alias = click.Command(
    "plugins", callback=extensions.callback, params=extensions.params, help=extensions.help, hidden=True
)
