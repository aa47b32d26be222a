"""The debug runtime of plugin-daemon: plugins under development connect over TCP.

A developer runs their plugin with the real SDK (``INSTALL_METHOD=remote``,
``REMOTE_INSTALL_URL=host:port``, ``REMOTE_INSTALL_KEY=<key>``); it registers, is installed for the
key's tenant at once, answers calls like an installed plugin, and goes away when it disconnects.

Modules, one job each:

- ``keys``: debugging keys, one per tenant, with a time to live, kept in the database;
- ``limits``: rate limiting of invalid keys per remote address;
- ``handshake``: reading the registration frames the SDK sends;
- ``declaration``: validating them into a declaration, assets and an identity;
- ``listener``: the TCP listener (admission, deadline, refusals);
- ``connection``: one registered connection (sessions, heartbeats, its end);
- ``logbook`` and ``tracing``: logs and request traces kept per plugin;
- ``runtime``: :class:`DebugRuntime`, the registry and the installations;
- ``routes``: the HTTP routes (key, plugins, logs, sessions).
"""

from __future__ import annotations
