"""Entry point of the debug runtime (group ``plugin_daemon``).

The runtime itself is not built yet: this module registers nothing, so the daemon lists the
extension as loaded but offers no ``debug`` runtime.
"""
