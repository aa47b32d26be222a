"""``AwsLambdaProvider``: each plugin package as one AWS Lambda function behind a streaming Function URL.

A launch checks the package, builds its deployment package with uv for Lambda's platform
(:mod:`.package`), creates the function (or updates its code and configuration), waits until
it is active, gives it a Function URL in ``RESPONSE_STREAM`` mode with ``AuthType=NONE`` (calls
are signed by the daemon instead, ``X-Dify-Plugin-Signature``, checked inside the function when
the connector has a signing secret), and writes the ``serverless.yml`` equivalent. Lambda itself
is the registry: a function's tags carry its package, so a connector restarted elsewhere finds
its functions again.

Settings (the connector's environment; boto3 reads ``AWS_REGION``, ``AWS_ENDPOINT_URL`` and the
credential variables itself):

- ``AWS_LAMBDA_ROLE_ARN`` (required): the functions' execution role;
- ``AWS_LAMBDA_RUNTIME`` (``python3.12``) and ``AWS_LAMBDA_ARCHITECTURE`` (``x86_64`` or ``arm64``);
- memory from the manifest's ``resource.memory`` (bytes) in MB, rounded up, 128 to 10240;
- timeout from the connector's ``--function-timeout``, at most Lambda's 900 s;
- ``AWS_LAMBDA_CODE_BUCKET`` (optional): upload the code through this S3 bucket (over 50 MB zipped).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import boto3
from botocore.exceptions import BotoCoreError, ClientError
from plugin_daemon.config import load_settings
from plugin_daemon_local.environment import find_uv
from plugin_daemon_serverless.connector.deployments import Deployment, Deployments, check_new_package
from plugin_daemon_serverless.connector.options import ConnectorOptions
from plugin_daemon_serverless.connector.provider import LaunchFailed, Provider
from plugin_daemon_serverless.sri import RUNNING, SUCCESS, FunctionInfo, LaunchEvent

from .package import PackageBuildError, Platform, build_deployment_package
from .serverless_yml import SECRET_NAME, FunctionSpec, write_serverless_yml

log = logging.getLogger(__name__)

MIN_MEMORY_MB, MAX_MEMORY_MB = 128, 10240
MAX_TIMEOUT = 900
#: the largest zip Lambda takes inline (larger ones go through S3)
MAX_INLINE_ZIP = 50 * 1024 * 1024
#: seconds a created or updated function has to become active
ACTIVE_DEADLINE = 300.0
EXEC_WRAPPER = "/var/task/bootstrap"
TAG_CHECKSUM = "dify-plugin-checksum"
TAG_IDENTIFIER = "dify-plugin-identifier"
_UNSAFE = re.compile(r"[^a-z0-9-]+")


def memory_mb(declaration: dict[str, Any]) -> int:
    """``resource.memory`` (bytes) as Lambda megabytes: rounded up, at least 128, at most 10240."""
    raw = (declaration.get("resource") or {}).get("memory") or 0
    try:
        wanted = math.ceil(int(raw) / (1024 * 1024))
    except (TypeError, ValueError):
        wanted = 0
    return min(MAX_MEMORY_MB, max(MIN_MEMORY_MB, wanted))


def lambda_function_name(filename: str) -> str:
    """``author@name@version@checksum.difypkg`` → ``dify-author-name-<12 hex>`` (≤ 64 characters)."""
    author, name, _version, rest = filename.split("@", 3)
    checksum = rest.removesuffix(".difypkg")
    stem = _UNSAFE.sub("-", f"{author}-{name}".lower().replace("_", "-")).strip("-")[:45]
    return f"dify-{stem}-{checksum[:12]}"


class AwsLambdaProvider(Provider):
    def __init__(self, options: ConnectorOptions) -> None:
        super().__init__(options)
        self.role = os.environ.get("AWS_LAMBDA_ROLE_ARN", "").strip()
        if not self.role:
            raise ValueError("the aws_lambda provider needs AWS_LAMBDA_ROLE_ARN (the functions' execution role)")
        self.platform = Platform(
            runtime=os.environ.get("AWS_LAMBDA_RUNTIME", "python3.12").strip(),
            architecture=os.environ.get("AWS_LAMBDA_ARCHITECTURE", "x86_64").strip(),
        )
        self.platform.python_platform  # noqa: B018 - refuse a bad architecture at start
        self.platform.python_version  # noqa: B018
        self.timeout = max(1, min(MAX_TIMEOUT, math.ceil(options.function_timeout)))
        #: when set, code goes through this S3 bucket (needed over 50 MB zipped; same region)
        self.bucket = os.environ.get("AWS_LAMBDA_CODE_BUCKET", "").strip()
        self.folder = options.home / "lambda"
        self.uv = find_uv(load_settings(PLUGIN_DAEMON_HOME=options.home))
        # boto3 reads AWS_DEFAULT_REGION; AWS_REGION (the name Lambda and most tools use) is passed on
        self.client = boto3.client("lambda", region_name=os.environ.get("AWS_REGION") or None)
        self.deployments = Deployments(
            "aws_lambda", (LaunchFailed, PackageBuildError, ClientError, BotoCoreError, OSError)
        )

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as group:
            self.deployments.group = group
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self.deployments.group = None

    # --- the SRI ------------------------------------------------------------------------------

    async def find(self, filename: str) -> FunctionInfo | None:
        return await anyio.to_thread.run_sync(self._find, filename)

    def _find(self, filename: str) -> FunctionInfo | None:
        name = lambda_function_name(filename)
        checksum = filename.rsplit("@", 1)[1].removesuffix(".difypkg")
        try:
            function = self.client.get_function(FunctionName=name)
            url = self.client.get_function_url_config(FunctionName=name)["FunctionUrl"]
        except self.client.exceptions.ResourceNotFoundException:
            return None
        if (function.get("Tags") or {}).get(TAG_CHECKSUM) != checksum:
            return None  # a name taken by something else
        configuration = function["Configuration"]
        return FunctionInfo(
            id=checksum[:32],
            name=name,
            endpoint=url,
            resource_name=configuration["FunctionArn"],
            state=str(configuration.get("State") or ""),
        )

    def launch(
        self, filename: str, package: bytes, *, verified: bool, metadata: dict[str, Any]
    ) -> AsyncIterator[LaunchEvent]:
        return self.deployments.launch(
            filename, lambda deployment: self._deploy(deployment, filename, package, metadata)
        )

    async def _deploy(self, deployment: Deployment, filename: str, package: bytes, metadata: dict[str, Any]) -> None:
        decoded = await check_new_package(
            deployment, filename, package, metadata, max_size=self.options.max_package_size, find=self.find
        )
        if decoded is None:
            return
        declaration, identifier, checksum = decoded.declaration, str(decoded.identifier), decoded.checksum
        name = lambda_function_name(filename)
        folder = self.folder / name
        deployment.emit("start", RUNNING, "building the deployment package")
        entrypoint = str(((declaration.get("meta") or {}).get("runner") or {}).get("entrypoint") or "main")
        archive = await build_deployment_package(
            package,
            entrypoint,
            folder / f"{name}-{self.platform.runtime}-{self.platform.architecture}.zip",
            uv=self.uv,
            platform=self.platform,
            progress=lambda line: deployment.emit("build", RUNNING, line),
        )
        deployment.emit("build", SUCCESS, "deployment package ready")
        spec = self._spec(name, declaration, identifier, checksum, archive)
        deployment.emit("run", RUNNING, f"deploying {name}")
        url = await anyio.to_thread.run_sync(self._deploy_function, spec)
        write_serverless_yml(spec, folder)
        deployment.launched(url, name, checksum[:32])

    def _spec(
        self, name: str, declaration: dict[str, Any], identifier: str, checksum: str, archive: Path
    ) -> FunctionSpec:
        environment = {
            "AWS_LAMBDA_EXEC_WRAPPER": EXEC_WRAPPER,
            "DIFY_PLUGIN_DAEMON_URL": self.options.daemon_url,
        }
        if self.options.signing_secret:
            environment[SECRET_NAME] = self.options.signing_secret
        return FunctionSpec(
            name=name,
            runtime=self.platform.runtime,
            architecture=self.platform.architecture,
            memory_mb=memory_mb(declaration),
            timeout=self.timeout,
            role=self.role,
            region=str(self.client.meta.region_name or ""),
            artifact=archive,
            environment=environment,
            tags={TAG_CHECKSUM: checksum, TAG_IDENTIFIER: identifier},
        )

    # --- the Lambda control plane (in a worker thread) -------------------------------------------

    def _code(self, spec: FunctionSpec) -> dict[str, Any]:
        """Where Lambda takes the code from: inline, or an object in AWS_LAMBDA_CODE_BUCKET."""
        code = spec.artifact.read_bytes()
        if self.bucket:
            key = f"dify-plugins/{spec.artifact.name}"
            boto3.client("s3", region_name=self.client.meta.region_name).put_object(
                Bucket=self.bucket, Key=key, Body=code
            )
            return {"S3Bucket": self.bucket, "S3Key": key}
        if len(code) > MAX_INLINE_ZIP:
            raise LaunchFailed(
                f"the deployment package is {len(code)} bytes, over the {MAX_INLINE_ZIP} bytes Lambda takes "
                "inline: set AWS_LAMBDA_CODE_BUCKET to upload it through S3"
            )
        return {"ZipFile": code}

    def _deploy_function(self, spec: FunctionSpec) -> str:
        code = self._code(spec)
        configuration: dict[str, Any] = {
            "FunctionName": spec.name,
            "Role": spec.role,
            "Runtime": spec.runtime,
            "Handler": spec.handler,
            "MemorySize": spec.memory_mb,
            "Timeout": spec.timeout,
            "Environment": {"Variables": spec.environment},
        }
        try:
            self.client.get_function(FunctionName=spec.name)
        except self.client.exceptions.ResourceNotFoundException:
            self.client.create_function(**configuration, Code=code, Architectures=[spec.architecture], Tags=spec.tags)
        else:
            self.client.update_function_code(FunctionName=spec.name, **code, Architectures=[spec.architecture])
            self._until_ready(spec.name)
            self.client.update_function_configuration(**configuration)
            arn = self.client.get_function(FunctionName=spec.name)["Configuration"]["FunctionArn"]
            self.client.tag_resource(Resource=arn, Tags=spec.tags)
        self._until_ready(spec.name)
        return self._function_url(spec.name)

    def _until_ready(self, name: str) -> None:
        waiter = self.client.get_waiter("function_updated_v2")
        waiter.wait(FunctionName=name, WaiterConfig={"Delay": 2, "MaxAttempts": int(ACTIVE_DEADLINE / 2)})

    def _function_url(self, name: str) -> str:
        wanted = {"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM"}
        try:
            current = self.client.get_function_url_config(FunctionName=name)
        except self.client.exceptions.ResourceNotFoundException:
            url = str(self.client.create_function_url_config(FunctionName=name, **wanted)["FunctionUrl"])
        else:
            url = str(current["FunctionUrl"])
            if any(current.get(key) != value for key, value in wanted.items()):
                self.client.update_function_url_config(FunctionName=name, **wanted)
        # a Function URL with AuthType NONE still needs this resource policy statement (kept if already there)
        with contextlib.suppress(self.client.exceptions.ResourceConflictException):
            self.client.add_permission(
                FunctionName=name,
                StatementId="dify-plugin-function-url",
                Action="lambda:InvokeFunctionUrl",
                Principal="*",
                FunctionUrlAuthType="NONE",
            )
        return url

    def describe(self) -> dict[str, Any]:
        return {
            "provider": "aws_lambda",
            "region": self.client.meta.region_name,
            "runtime": self.platform.runtime,
            "architecture": self.platform.architecture,
            "timeout": self.timeout,
            "deployments_under_way": sorted(self.deployments.under_way),
        }
