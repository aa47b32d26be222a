"""Management commands against a running daemon: install, list, status, uninstall, invoke, logs, tasks.

Each takes ``--url``, ``--key`` and ``--tenant`` (also ``PLUGIN_DAEMON_URL``, ``PLUGIN_DAEMON_KEY``,
``PLUGIN_DAEMON_TENANT``) and ``--json``. Tables and progress go to the terminal; ``--json`` prints
the daemon's data as one JSON document (``invoke`` and ``logs``: one JSON object a line, as they come).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

from plugin_daemon.daemon_client import Connection, DaemonClient, DaemonClientError

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds between two looks at an install task.
POLL_INTERVAL = 0.5


def connection_options(command: F) -> F:
    """``--url``, ``--key``, ``--tenant`` and ``--json``; the command gets ``client`` and ``as_json``."""

    @click.option("--url", default=None, help="The daemon's URL (PLUGIN_DAEMON_URL; default from SERVER_PORT).")
    @click.option(
        "--key", default=None, help="The server key (PLUGIN_DAEMON_KEY; else SERVER_KEY, else the data folder's)."
    )
    @click.option("--tenant", default=None, help="The Dify tenant (workspace) id (PLUGIN_DAEMON_TENANT).")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
    @functools.wraps(command)
    def wrapper(url: str | None, key: str | None, tenant: str | None, as_json: bool, **kwargs: Any) -> Any:
        try:
            with DaemonClient(Connection.resolve(url, key, tenant)) as client:
                return command(client=client, as_json=as_json, **kwargs)
        except DaemonClientError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def print_json_line(data: Any) -> None:
    click.echo(orjson.dumps(data).decode())


def print_table(columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    output_console().print(table)


def output_console() -> Console:
    """Standard output; off a terminal as wide as the content (a pipe or a log cuts nothing)."""
    console = Console(soft_wrap=True)
    if not console.is_terminal:
        console = Console(soft_wrap=True, width=100_000)
    return console


def pairs(values: tuple[str, ...], option: str) -> dict[str, Any]:
    """``key=value`` (a string) or ``key:=json`` (a number, a boolean, a list...)."""
    result: dict[str, Any] = {}
    for item in values:
        name, typed, value = item.partition(":=")
        if typed and "=" not in name:
            try:
                result[name] = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise click.BadParameter(f"{item!r}: the value after := is not JSON", param_hint=option) from None
            continue
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint=option)
        result[name] = value
    return result


# --- install ---------------------------------------------------------------------------------
@click.command()
@click.argument("package_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--runtime", default=None, help="The runtime to install into (local, debug, serverless; default PLATFORM)."
)
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait for the install.")
@connection_options
def install(client: DaemonClient, as_json: bool, package_file: Path, runtime: str | None, timeout: float) -> None:
    """Upload PACKAGE_FILE to a running daemon and install it for a tenant, showing progress."""
    tenant = client.tenant
    console = Console(stderr=True, soft_wrap=True)
    progress = Progress(console)
    progress.show(f"uploading {package_file.name}...")
    decoded = client.post(
        f"/plugin/{tenant}/management/install/upload/package",
        files={"dify_pkg": (package_file.name, package_file.read_bytes(), "application/octet-stream")},
    )
    identifier = decoded["unique_identifier"]
    meta = {"runtime_type": runtime} if runtime else {}
    started = client.post(
        f"/plugin/{tenant}/management/install/identifiers",
        json={"plugin_unique_identifiers": [identifier], "source": "package", "metas": [meta]},
    )
    if started["all_installed"]:
        progress.done()
        if as_json:
            print_json({"unique_identifier": identifier, "status": "installed", "already": True})
        else:
            console.print(f"{identifier} is installed for tenant {tenant} already")
        return
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/plugin/{tenant}/management/install/tasks/{started['task_id']}")
        plugin = task["plugins"][0]
        progress.show(f"installing {identifier}: {plugin['message']}")
        if task["status"] in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            progress.done()
            raise DaemonClientError(f"the install did not finish within {timeout:g} s")
        time.sleep(POLL_INTERVAL)
    progress.done()
    if as_json:
        print_json(task)
    if task["status"] == "failed":
        raise DaemonClientError(f"install failed: {plugin['message']}")
    if not as_json:
        console.print(f"installed {identifier} for tenant {tenant}")


class Progress:
    """A spinner on a terminal; off one, a line each time the step changes (logs and CI see them)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.last = ""
        self.status = console.status("") if console.is_terminal else None
        if self.status is not None:
            self.status.start()

    def show(self, line: str) -> None:
        if line == self.last:
            return
        self.last = line
        if self.status is not None:
            self.status.update(line)
        else:
            click.echo(line, err=True)

    def done(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


# --- list, status, uninstall, tasks ---------------------------------------------------------
@click.command(name="list")
@connection_options
def list_plugins(client: DaemonClient, as_json: bool) -> None:
    """The plugins installed for the tenant, with their runtime and state."""
    installations = client.installations()
    states = instance_states(client.health())
    for item in installations:
        item["state"] = states.get(item["plugin_unique_identifier"], {}).get("state", "absent")
    if as_json:
        print_json([{key: value for key, value in item.items() if key != "declaration"} for item in installations])
        return
    print_table(
        ("plugin", "version", "runtime", "state", "installation id"),
        (
            (item["plugin_id"], item["version"], item["runtime_type"], item["state"], item["installation_id"])
            for item in installations
        ),
    )


def instance_states(health: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Unique identifier → what its runtime says of it (state, pid, rss, restarts, last_error...)."""
    found: dict[str, dict[str, Any]] = {}
    for name, details in (health.get("runtimes") or {}).items():
        plugins = details.get("plugins") if isinstance(details, dict) else None
        if not isinstance(plugins, dict):  # a runtime that reports identifier -> state directly
            plugins = {key: {"state": value} for key, value in details.items() if isinstance(value, str)}
        for identifier, info in plugins.items():
            info = dict(info) if isinstance(info, dict) else {"state": str(info)}
            info.setdefault("state", "ready")
            info["runtime"] = name
            found[identifier] = info
    return found


@click.command()
@click.argument("plugin_id", required=False)
@connection_options
def status(client: DaemonClient, as_json: bool, plugin_id: str | None) -> None:
    """Processes, memory, restarts and last error of the tenant's plugins (or of PLUGIN_ID)."""
    health = client.health()
    states = instance_states(health)
    installations = client.installations()
    if plugin_id is not None:
        installations = [item for item in installations if item["plugin_id"] == plugin_id]
        if not installations:
            raise DaemonClientError(f"{plugin_id} is not installed for tenant {client.tenant}")
    rows = []
    for item in installations:
        instance = states.get(item["plugin_unique_identifier"], {})
        rows.append(
            {
                "plugin_id": item["plugin_id"],
                "plugin_unique_identifier": item["plugin_unique_identifier"],
                "runtime": item["runtime_type"],
                "state": instance.get("state", "absent"),
                "pid": instance.get("pid"),
                "rss": instance.get("rss"),
                "memory_limit": instance.get("memory_limit"),
                "restarts": instance.get("restarts"),
                "sessions": instance.get("sessions"),
                "last_error": instance.get("last_error") or instance.get("error"),
            }
        )
    if as_json:
        print_json({"daemon": {key: value for key, value in health.items() if key != "runtimes"}, "plugins": rows})
        return
    click.echo(
        f"daemon: {health['status']}, version {health['version']}, {health['active_requests']} request(s) in flight"
    )
    for problem in health.get("problems", []):
        click.echo(f"problem: {problem}")
    print_table(
        ("plugin", "runtime", "state", "pid", "memory", "restarts", "sessions", "last error"),
        (
            (
                row["plugin_id"],
                row["runtime"],
                row["state"],
                row["pid"],
                _mib(row["rss"]),
                row["restarts"],
                row["sessions"],
                row["last_error"],
            )
            for row in rows
        ),
    )


def _mib(size: int | None) -> str | None:
    return None if size is None else f"{size / 2**20:.1f} MiB"


@click.command()
@click.argument("plugin_id")
@connection_options
def uninstall(client: DaemonClient, as_json: bool, plugin_id: str) -> None:
    """Uninstall PLUGIN_ID (author/name) for the tenant."""
    found = [item for item in client.installations() if item["plugin_id"] == plugin_id]
    if not found:
        raise DaemonClientError(f"{plugin_id} is not installed for tenant {client.tenant}")
    for item in found:
        client.post(
            f"/plugin/{client.tenant}/management/uninstall", json={"plugin_installation_id": item["installation_id"]}
        )
    if as_json:
        print_json({"uninstalled": [item["plugin_unique_identifier"] for item in found]})
    else:
        for item in found:
            click.echo(f"uninstalled {item['plugin_unique_identifier']} for tenant {client.tenant}")


@click.command()
@click.option("--limit", type=click.IntRange(1, 256), default=20, show_default=True, help="How many, newest first.")
@connection_options
def tasks(client: DaemonClient, as_json: bool, limit: int) -> None:
    """The tenant's install tasks, newest first."""
    found = client.get(f"/plugin/{client.tenant}/management/install/tasks", page=1, page_size=limit) or []
    if as_json:
        print_json(found)
        return
    print_table(
        ("task", "status", "created", "plugins"),
        (
            (
                task["id"],
                task["status"],
                task.get("created_at"),
                "; ".join(f"{plugin['plugin_unique_identifier']}: {plugin['message']}" for plugin in task["plugins"]),
            )
            for task in found
        ),
    )


# --- invoke, logs -----------------------------------------------------------------------------
@click.command()
@click.argument("plugin_id")
@click.argument("provider")
@click.argument("name", metavar="TOOL")
@click.option("--param", "params", multiple=True, help="key=value (or key:=JSON); a tool or model parameter.")
@click.option("--credential", "credentials", multiple=True, help="key=value (or key:=JSON); a provider credential.")
@click.option("--llm", is_flag=True, help="TOOL names a model: a streamed LLM call with --prompt.")
@click.option("--prompt", default=None, help="The user message of an --llm call.")
@click.option("--user", default="plugin-daemon-cli", show_default=True, help="The user id the call is made for.")
@connection_options
def invoke(
    client: DaemonClient,
    as_json: bool,
    plugin_id: str,
    provider: str,
    name: str,
    params: tuple[str, ...],
    credentials: tuple[str, ...],
    llm: bool,
    prompt: str | None,
    user: str,
) -> None:
    """Call tool TOOL of PROVIDER in PLUGIN_ID (or a model, with --llm), printing the answer as it comes."""
    parameters = pairs(params, "--param")
    secrets = pairs(credentials, "--credential")
    if llm:
        if prompt is None:
            raise click.UsageError("--llm needs --prompt")
        path, data = "llm/invoke", llm_data(provider, name, parameters, secrets, prompt)
    else:
        path, data = "tool/invoke", tool_data(provider, name, parameters, secrets)
    body = {"user_id": user, "data": data}
    printed_text = False
    for event in client.events(
        "POST", f"/plugin/{client.tenant}/dispatch/{path}", headers={"X-Plugin-ID": plugin_id}, json=body
    ):
        if as_json:
            print_json_line(event)
            if event.get("code", 0) != 0:
                raise SystemExit(1)
            continue
        if event.get("code", 0) != 0:
            if printed_text:
                click.echo()
            raise DaemonClientError(str(event.get("message")))
        text = answer_text(event.get("data"), llm)
        if text is None:
            if printed_text:
                click.echo()
                printed_text = False
            print_json_line(event.get("data"))
        else:
            click.echo(text, nl=False)
            printed_text = True
    if printed_text:
        click.echo()


def tool_data(provider: str, tool: str, parameters: dict[str, Any], credentials: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": provider,
        "tool": tool,
        "tool_parameters": parameters,
        "credentials": credentials,
        "credential_type": "api-key",
    }


def llm_data(
    provider: str, model: str, parameters: dict[str, Any], credentials: dict[str, Any], prompt: str
) -> dict[str, Any]:
    return {
        "provider": provider,
        "model": model,
        "model_type": "llm",
        "credentials": credentials,
        "prompt_messages": [{"role": "user", "content": prompt}],
        "model_parameters": parameters,
        "stop": [],
        "tools": [],
        "stream": True,
    }


def answer_text(data: Any, llm: bool) -> str | None:
    """The text in one streamed chunk (a tool's text message, a model's delta), else None."""
    if not isinstance(data, dict):
        return None
    if llm:
        content = ((data.get("delta") or {}).get("message") or {}).get("content")
        return content if isinstance(content, str) else None
    if data.get("type") == "text":
        text = (data.get("message") or {}).get("text")
        return text if isinstance(text, str) else None
    return None


@click.command()
@click.argument("plugin_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines as they come (Ctrl-C to stop).")
@connection_options
def logs(client: DaemonClient, as_json: bool, plugin_id: str, follow: bool) -> None:
    """The kept log of PLUGIN_ID (its output, its calls, its restarts), then new lines with --follow."""
    path = f"/plugin/{client.tenant}/debugging/logs"
    params = {"plugin_id": plugin_id, "follow": "true" if follow else "false"}
    try:
        for entry in client.events("GET", path, params=params):
            if as_json:
                print_json_line(entry)
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.get("time", 0)))
                click.echo(f"{stamp} {entry.get('level', '')} [{entry.get('source', '')}] {entry.get('message', '')}")
    except KeyboardInterrupt:
        pass


COMMANDS = (install, list_plugins, status, uninstall, invoke, logs, tasks)
