from dify_plugin import DifyPluginEnv, Plugin

plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=120))

if __name__ == "__main__":
    # Fails on purpose before serving: the daemon must report this (stderr tail) instead of waiting.
    raise RuntimeError("cannot start: missing config")
    plugin.run()
