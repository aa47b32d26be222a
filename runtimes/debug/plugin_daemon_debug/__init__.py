"""The debug runtime of plugin-daemon."""
