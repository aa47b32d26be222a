"""The local runtime of plugin-daemon."""
