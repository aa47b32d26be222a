"""The Serverless Framework file equivalent to what the provider deployed, for operators who deploy with it.

Written next to the deployment package (``<home>/lambda/<function>/serverless.yml``); ``serverless
deploy`` from that folder makes the same function and Function URL. The signing secret is not
written: the file refers to ``${env:DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECRET_NAME = "DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET"


@dataclass(frozen=True)
class FunctionSpec:
    """One function as the provider configures it."""

    name: str
    runtime: str
    architecture: str
    memory_mb: int
    timeout: int
    role: str
    region: str
    artifact: Path
    environment: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    handler: str = "dify_lambda_runtime.main"


def serverless_config(spec: FunctionSpec) -> dict[str, Any]:
    environment = {
        key: ("${env:" + SECRET_NAME + "}" if key == SECRET_NAME else value) for key, value in spec.environment.items()
    }
    return {
        "service": spec.name,
        "frameworkVersion": ">=3.28.0",
        "provider": {
            "name": "aws",
            "runtime": spec.runtime,
            "architecture": spec.architecture,
            "region": spec.region,
            "memorySize": spec.memory_mb,
            "timeout": spec.timeout,
            "iam": {"role": spec.role},
        },
        "package": {"artifact": str(spec.artifact)},
        "functions": {
            "plugin": {
                "name": spec.name,
                "handler": spec.handler,
                "environment": environment,
                "tags": dict(spec.tags),
                "url": {"invokeMode": "RESPONSE_STREAM"},
            }
        },
    }


def write_serverless_yml(spec: FunctionSpec, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "serverless.yml"
    temporary = path.with_suffix(".yml.tmp")
    temporary.write_text(yaml.safe_dump(serverless_config(spec), sort_keys=False))
    temporary.replace(path)
    return path
