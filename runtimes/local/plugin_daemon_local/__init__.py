"""The local runtime of plugin-daemon: each installed plugin runs as ``python -m main`` in its own
virtualenv, talking the Dify plugin protocol over stdin/stdout.

Modules, one job each:

- ``interpreters``: find a Python of a given version, or every one on the machine;
- ``python_choice``: pick a plugin's Python from its ``requires-python`` and manifest, and say why;
- ``environment``: extract the package and build its venv with uv (marker, locks);
- ``commands``: run an install command under inactivity and hard deadlines;
- ``envvars``: the allow-listed environments of plugins and of uv;
- ``spawning``: start children in their own process group, dying with the daemon;
- ``sandbox``: what a plugin process or a dependency install may reach (a uid per plugin as root,
  Landlock rules, scratch folders), and the log line saying which isolation is in force;
- ``landlock``: the Landlock system calls;
- ``install_sources``: what a package may ask of its own install (its own files; indexes by rule);
- ``process``: one plugin process (pipes, exit; sessions are routed by the core's
  ``plugin_daemon.protocol.router``);
- ``stray_output``: what a plugin writes on stdout outside the protocol (tail, logged in bursts);
- ``memory``: RSS of process trees;
- ``supervisor``: one plugin's life (launch, ready, restart with backoff, crash-loop cap);
- ``runtime``: :class:`LocalRuntime`, the :class:`plugin_daemon.runtime.Runtime` of it all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runtime import LocalRuntime

__all__ = ["LocalRuntime"]


def __getattr__(name: str) -> Any:
    if name == "LocalRuntime":
        from .runtime import LocalRuntime

        return LocalRuntime
    raise AttributeError(name)
