"""The serverless runtime of plugin-daemon."""
