"""Entry point of the serverless runtime (group ``plugin_daemon``).

The runtime itself is not built yet: this module registers nothing, so the daemon lists the
extension as loaded but offers no ``serverless`` runtime.
"""
