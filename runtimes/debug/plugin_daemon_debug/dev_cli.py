"""``plugin-daemon dev DIR``: run a plugin folder against a daemon while it is being written.

For a plugin developer. It builds the folder's environment with uv (``DIR/.venv``, rebuilt when
``requirements.txt`` changes), gets the tenant's debugging key from the daemon (``--url``,
``--key``, ``--tenant``; or ``PLUGIN_DAEMON_URL``/``KEY``/``TENANT``), runs ``python -m main`` in
remote mode against the daemon's debug listener, and restarts it when a file changes (watchfiles).

A restart starts the new copy first and stops the old one once the daemon routes to the new one,
so no call falls in between. With ``--debug[=PORT]`` the plugin listens for the IDE (debugpy, with
``GEVENT_SUPPORT=True``, without which breakpoints never stop under the SDK's gevent); the port
is fixed, so there the old copy stops first and the daemon's reload grace holds the calls.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import yaml
from plugin_daemon.daemon_client import Connection, DaemonClient, DaemonClientError

#: Seconds a new copy has to register before the old one is stopped anyway.
REGISTER_DEADLINE = 60.0
#: Seconds the old copy may finish the calls it already has after the new one is routed to.
HANDOVER = 0.5
#: Seconds between SIGINT and SIGKILL of a copy being stopped.
STOP_GRACE = 2.0
WATCHED_SUFFIXES = frozenset({".py", ".yaml", ".yml", ".toml", ".txt", ".env", ".svg", ".png"})
IGNORED_PARTS = frozenset({".venv", "__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"})
#: The sitecustomize injected with --debug: listen for the IDE before the plugin's main runs.
SITECUSTOMIZE = """\
import os
_port = os.environ.pop("PLUGIN_DAEMON_DEV_DEBUG_PORT", None)
if _port:
    import debugpy
    debugpy.listen(("127.0.0.1", int(_port)))
"""


def watched_in(folder: Path) -> Callable[[object, str], bool]:
    """The watch filter: the plugin's code, declarations, assets and requirements, judged by the path
    inside ``folder`` (the folder itself may sit anywhere, under a dot-folder too)."""

    def watched(change: object, path: str) -> bool:
        relative = Path(os.path.relpath(path, folder))
        parts = relative.parts
        if any(part in IGNORED_PARTS or (part.startswith(".") and part != ".env") for part in parts):
            return False
        return relative.suffix in WATCHED_SUFFIXES or relative.name == ".env" or "_assets" in parts

    return watched


def build_environment(folder: Path) -> Path:
    """``folder/.venv`` with the plugin's requirements (uv); rebuilt only when they change."""
    venv = folder / ".venv"
    requirements = folder / "requirements.txt"
    stamp = venv / ".plugin-daemon-dev"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest() if requirements.exists() else "none"
    if stamp.exists() and stamp.read_text() == wanted:
        return venv
    click.echo(f"building {venv} with uv", err=True)
    try:
        subprocess.run(["uv", "venv", "-q", "--allow-existing", str(venv)], cwd=folder, check=True)
        if requirements.exists():
            env = {**os.environ, "VIRTUAL_ENV": str(venv)}
            subprocess.run(["uv", "pip", "install", "-q", "-r", str(requirements)], cwd=folder, env=env, check=True)
    except FileNotFoundError:
        raise click.ClickException("uv is not installed (it builds the plugin's environment)") from None
    except subprocess.CalledProcessError as exc:
        raise click.ClickException(f"building the plugin's environment failed (exit {exc.returncode})") from None
    stamp.write_text(wanted)
    return venv


def listener_address(client: DaemonClient) -> str:
    """``host:port`` of the daemon's debug listener, as the plugin reaches it."""
    remote = client.health()["runtimes"].get("remote")
    if not remote or not remote.get("listening"):
        raise DaemonClientError("the daemon's debug listener is not listening (PLUGIN_REMOTE_INSTALLING_ENABLED)")
    host, _, port = str(remote["listening"]).rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = urlsplit(client.connection.url).hostname or "127.0.0.1"
    return f"{host}:{port}"


class DevRunner:
    """The plugin's copies: start, hand over, stop."""

    def __init__(self, folder: Path, python: Path, env: dict[str, str], client: DaemonClient, plugin_id: str) -> None:
        self.folder = folder
        self.python = python
        self.env = env
        self.client = client
        self.plugin_id = plugin_id
        self.current: subprocess.Popen[bytes] | None = None

    def connected(self) -> set[float]:
        plugins = self.client.get(f"/plugin/{self.client.tenant}/debugging/plugins")
        return {p["connected_at"] for p in plugins if p["plugin_id"] == self.plugin_id and p["alive"]}

    def start(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([str(self.python), "-m", "main"], cwd=self.folder, env=self.env, start_new_session=True)

    def wait_registered(self, before: set[float], child: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + REGISTER_DEADLINE
        while time.monotonic() < deadline and child.poll() is None:
            if self.connected() - before:
                return True
            time.sleep(0.05)
        return False

    @staticmethod
    def stop(child: subprocess.Popen[bytes] | None) -> None:
        if child is None or child.poll() is not None:
            return
        try:
            os.killpg(child.pid, signal.SIGINT)  # the SDK exits at once on SIGINT
            child.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        except ProcessLookupError:
            pass

    def restart(self, *, overlap: bool) -> None:
        old = self.current
        if not overlap:
            self.stop(old)
        before = self.connected()
        self.current = self.start()
        if overlap and old is not None:
            if self.wait_registered(before, self.current):
                time.sleep(HANDOVER)  # the calls the old copy already has finish
                self.stop(old)
            elif old.poll() is None:
                click.echo("the new copy did not register; the running one keeps serving", err=True)
                self.stop(self.current)
                self.current = old


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--url", default=None, help="The daemon's URL (PLUGIN_DAEMON_URL; default from SERVER_PORT).")
@click.option(
    "--key", default=None, help="The server key (PLUGIN_DAEMON_KEY; else SERVER_KEY, else the data folder's)."
)
@click.option("--tenant", default=None, help="The Dify tenant (workspace) id (PLUGIN_DAEMON_TENANT).")
@click.option("--venv", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Use this environment.")
@click.option(
    "--debug", "debug_port", type=int, default=None, is_flag=False, flag_value=5678, help="Listen for the IDE."
)
def dev(
    folder: Path, url: str | None, key: str | None, tenant: str | None, venv: Path | None, debug_port: int | None
) -> None:
    """Run the plugin in FOLDER against the daemon, restarted on every change."""
    folder = folder.resolve()
    manifest: dict[str, Any] = yaml.safe_load((folder / "manifest.yaml").read_text())
    plugin_id = f"{manifest['author']}/{manifest['name']}"
    python = (venv or build_environment(folder)) / "bin" / "python"
    try:
        with DaemonClient(Connection.resolve(url, key, tenant)) as client:
            debugging_key = client.post(f"/plugin/{client.tenant}/debugging/key")["key"]
            env = {
                **os.environ,
                "INSTALL_METHOD": "remote",
                "REMOTE_INSTALL_URL": listener_address(client),
                "REMOTE_INSTALL_KEY": debugging_key,
            }
            if debug_port is not None:
                inject = Path(tempfile.mkdtemp(prefix="plugin-daemon-dev-"))
                (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
                ours = importlib.util.find_spec("debugpy")
                if ours is not None and ours.origin:  # injected on the path, not installed into the plugin's venv
                    (inject / "debugpy").symlink_to(Path(ours.origin).parent, target_is_directory=True)
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(inject), env.get("PYTHONPATH")]))
                env["PLUGIN_DAEMON_DEV_DEBUG_PORT"] = str(debug_port)
                env["GEVENT_SUPPORT"] = "True"
                env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
            runner = DevRunner(folder, python, env, client, plugin_id)
            run(runner, folder, overlap=debug_port is None)
    except DaemonClientError as exc:
        raise click.ClickException(str(exc)) from None


def run(runner: DevRunner, folder: Path, *, overlap: bool) -> None:
    import watchfiles

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner.restart(overlap=overlap)
    click.echo(f"running {runner.plugin_id} from {folder}; watching for changes", err=True)
    try:
        for changes in watchfiles.watch(
            folder, watch_filter=watched_in(folder), debounce=400, step=50, stop_event=stop
        ):
            names = sorted({os.path.relpath(path, folder) for _, path in changes})
            click.echo(f"changed: {', '.join(names)}; restarting", err=True)
            runner.restart(overlap=overlap)
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop(runner.current)
