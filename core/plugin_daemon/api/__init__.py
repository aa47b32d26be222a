"""The HTTP API that the Dify API server calls."""
