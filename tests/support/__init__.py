"""Test support: loopback stand-ins and a direct plugin driver.

- :mod:`.openai_server`: ``OpenAIServer``, an OpenAI-compatible chat-completions server.
- :mod:`.dify_inner_api`: ``DifyInnerAPI``, Dify's inner API (backwards invocations).
- :mod:`.plugin_driver`: ``ensure_venv`` and ``PluginProcess``, to run ``tests/plugins/*`` without the daemon.
"""
