import sys
import traceback

print("SyntaxWarning: invalid escape sequence '\\d' (noise on stderr)", file=sys.stderr, flush=True)
try:
    # an ImportError in the plugin's own code, reported the way some plugins do: on stdout
    from provider.sagemaker_helpers import endpoint_client  # noqa: F401
except ImportError:
    traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()
    sys.exit(1)

from dify_plugin import DifyPluginEnv, Plugin  # noqa: E402

plugin = Plugin(DifyPluginEnv(MAX_REQUEST_TIMEOUT=120))

if __name__ == "__main__":
    plugin.run()
