"""The connector's configuration (from ``plugin-daemon connector`` options or the environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True)
class ConnectorOptions:
    #: what callers must send as the raw ``Authorization`` header
    api_key: str
    #: base URL at which the daemon reaches this connector's functions (``http://host:port``)
    public_url: str
    #: the connector's own state: uploaded packages and its function registry
    home: Path
    #: DIFY_PLUGIN_DAEMON_URL given to functions, for their backwards calls
    daemon_url: str = "http://127.0.0.1:5002"
    #: where package environments are built (default ``<home>/cwd``)
    working_path: Path | None = None
    #: seconds a function process may stay idle before it is stopped (scale to zero)
    idle_timeout: float = 300.0
    #: seconds a cold start may take before the call fails
    start_timeout: float = 120.0
    #: seconds one call to a function may last
    function_timeout: float = 900.0
    #: when set, a call must carry X-Dify-Plugin-Signature (HMAC-SHA256 of the body with this secret)
    signing_secret: str = ""
    max_package_size: int = 50 * MiB
    #: largest invoke body a function accepts (a Lambda function URL takes 6 MB)
    max_request_bytes: int = 6 * MiB

    @property
    def work_path(self) -> Path:
        return (self.working_path or self.home / "cwd").resolve()
