"""The Serverless Runtime Interface (SRI) on the wire, shared by the daemon's client and our connector.

Routes (``reference/protocol.md`` §3.1): ``/ping`` answers the JSON string ``"pong"``;
``GET /v1/runner/instances?filename=...`` lists the function deployed for a package;
``POST /v1/launch`` (multipart: ``context`` file, ``verified``, ``metadata``) deploys one and
streams ``data: {"Stage","State","Obj","Message"}`` lines. Every route wants the connector's
key as the raw ``Authorization`` header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

STAGES = ("healthz", "start", "build", "run", "end")
RUNNING, SUCCESS, FAILED = "running", "success", "failed"


def package_filename(identifier: str) -> str:
    """``author/name:version@checksum`` → ``author@name@version@checksum.difypkg``."""
    plugin_id, _, rest = identifier.partition(":")
    version, _, checksum = rest.partition("@")
    author, _, name = plugin_id.rpartition("/")
    return f"{author}@{name}@{version}@{checksum}.difypkg"


@dataclass(frozen=True)
class FunctionInfo:
    """One deployed function, as ``/v1/runner/instances`` lists it."""

    id: str
    name: str
    endpoint: str
    resource_name: str = ""
    state: str = ""

    def as_item(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Endpoint": self.endpoint,
            "ResourceName": self.resource_name,
            "Status": {"State": self.state},
        }

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> FunctionInfo:
        lowered = {str(key).lower(): value for key, value in item.items()}  # Go matches keys case-insensitively
        status = lowered.get("status") if isinstance(lowered.get("status"), dict) else {}
        return cls(
            id=str(lowered.get("id") or ""),
            name=str(lowered.get("name") or ""),
            endpoint=str(lowered.get("endpoint") or ""),
            resource_name=str(lowered.get("resourcename") or ""),
            state=str({str(k).lower(): v for k, v in (status or {}).items()}.get("state") or ""),
        )


@dataclass(frozen=True)
class LaunchEvent:
    """One line of the launch stream."""

    stage: str
    state: str
    message: str = ""
    obj: str = ""

    def encode(self) -> bytes:
        body = {"Stage": self.stage, "Obj": self.obj, "State": self.state, "Message": self.message}
        return b"data: " + orjson.dumps(body) + b"\n\n"

    @classmethod
    def parse(cls, line: bytes) -> LaunchEvent | None:
        """A launch line (``data:`` prefix optional); None for blank lines, comments and other JSON."""
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line.startswith(b"{"):
            return None
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(body, dict) or "Stage" not in body:
            return None
        return cls(
            stage=str(body.get("Stage") or ""),
            state=str(body.get("State") or ""),
            message=str(body.get("Message") or ""),
            obj=str(body.get("Obj") or ""),
        )


def run_message(endpoint: str, name: str, function_id: str) -> str:
    """The ``run``/``success`` message: ``endpoint=<url>,name=<fn>,id=<id>``."""
    return f"endpoint={endpoint},name={name},id={function_id}"


def parse_run_message(message: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
