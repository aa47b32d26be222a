import json
import os
from collections.abc import Mapping

from dify_plugin import Endpoint
from werkzeug import Request, Response


class PidEndpoint(Endpoint):
    """Answers the process id of the plugin, as JSON."""

    def _invoke(self, r: Request, values: Mapping, settings: Mapping) -> Response:
        return Response(json.dumps({"pid": os.getpid()}), status=200, content_type="application/json")
