"""Backwards invocation: plugins calling Dify (and the daemon's own storage)."""

from plugin_daemon.backwards.invoker import BackwardsInvoker

__all__ = ["BackwardsInvoker"]
