"""The command line that starts a plugin, and the codec its process speaks.

An SDK plugin is ``<venv>/bin/python -m <entrypoint>``. A plugin with ``meta.runner.protocol``
(``line/1``: any language, docs/line-protocol.md) brings its own program: ``meta.runner.entrypoint``
is its command line (a string, split as a shell would, without a shell), run in the plugin's
folder with no Python environment.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from plugin_daemon.protocol.codecs import LineCodec, codec_for, runner_protocol
from plugin_daemon.runtime import PluginSpec


class LaunchCommandError(Exception):
    """The manifest's entrypoint cannot be run; the message says why."""


@dataclass(frozen=True)
class LaunchCommand:
    argv: list[str]
    env: dict[str, str]
    #: None for the SDK protocol (no codec: the process speaks the daemon's own frames)
    codec: LineCodec | None


def launch_command(spec: PluginSpec, python: Path, venv: Path, env: dict[str, str]) -> LaunchCommand:
    runner = (spec.declaration.get("meta") or {}).get("runner") or {}
    entrypoint = str(runner.get("entrypoint") or "main")
    protocol = runner_protocol(spec.declaration)
    if protocol is None:
        return LaunchCommand([str(python), "-m", entrypoint], env, None)
    try:
        factory = codec_for(protocol)
        argv = shlex.split(entrypoint)
    except (KeyError, ValueError) as exc:
        raise LaunchCommandError(f"cannot start {spec.plugin_id}: meta.runner: {exc}") from None
    if not argv:
        raise LaunchCommandError(f"cannot start {spec.plugin_id}: meta.runner.entrypoint is empty")
    own_env = dict(env)  # no Python environment: its folder is not on PATH
    own_env.pop("VIRTUAL_ENV", None)
    venv_bin = str(venv / "bin")
    own_env["PATH"] = os.pathsep.join(part for part in own_env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    return LaunchCommand(argv, own_env, factory())
