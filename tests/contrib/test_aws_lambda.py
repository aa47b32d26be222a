"""The ``aws_lambda`` provider: moto's Lambda control plane (server mode, loopback) for the deployment,
and the built deployment package's own runtime loop, run here against a stand-in of Lambda's
Runtime API, answering a Function URL event with a real SDK plugin, streamed.

moto cannot run a function without Docker, and nothing here serves a Function URL: what only a
real AWS account proves (the exec wrapper taking over the managed runtime, IAM, the URL itself)
is the manual release check of the README.
"""

from __future__ import annotations

import base64
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import httpx
import orjson
import pytest
import yaml
from moto.server import ThreadedMotoServer
from plugin_daemon.packages import build_package, decode_package
from plugin_daemon_aws_lambda.function_runtime import PRELUDE_SEPARATOR, STREAM_CONTENT_TYPE
from plugin_daemon_aws_lambda.package import BOOTSTRAP, Platform
from plugin_daemon_aws_lambda.provider import MAX_INLINE_ZIP, AwsLambdaProvider, lambda_function_name, memory_mb
from plugin_daemon_aws_lambda.serverless_yml import FunctionSpec
from plugin_daemon_local.interpreters import InterpreterFinder
from plugin_daemon_serverless.connector.app import create_connector_app
from plugin_daemon_serverless.connector.options import ConnectorOptions
from plugin_daemon_serverless.connector.provider import LaunchFailed, load_provider
from plugin_daemon_serverless.connector_client import ConnectorClient
from plugin_daemon_serverless.signing import SIGNATURE_HEADER, sign
from plugin_daemon_serverless.sri import package_filename

from tests.runtimes.local.local_runtime_support import PLUGINS, tool_request
from tests.support.daemon_server import AppServer, free_port
from tests.support.go_sri import GoSRIClient
from tests.support.lambda_runtime_api import LambdaRuntimeAPI

CONNECTOR_KEY = "lambda-connector-key-5a2e"
SECRET = "lambda-signing-secret-0b7c"
DAEMON_URL = "http://daemon.invalid:5002"
LAUNCH_DEADLINE = 900.0
CALL_DEADLINE = 60.0


def test_memory_is_rounded_up_to_what_lambda_takes() -> None:
    assert memory_mb({"resource": {"memory": 268435456}}) == 256
    assert memory_mb({"resource": {"memory": 268435457}}) == 257
    assert memory_mb({"resource": {"memory": 1024}}) == 128
    assert memory_mb({}) == 128
    assert memory_mb({"resource": {"memory": 64 * 1024**3}}) == 10240
    assert memory_mb({"resource": {"memory": "lots"}}) == 128


def test_function_names_fit_lambda() -> None:
    name = lambda_function_name("some_author@" + "n" * 200 + "@1.0.0@" + "f" * 64 + ".difypkg")
    assert len(name) <= 64 and name.startswith("dify-some-author-nnn") and name.endswith("-" + "f" * 12)


def test_platforms() -> None:
    assert Platform("python3.12", "x86_64").python_platform == "x86_64-manylinux2014"
    assert Platform("python3.12", "arm64").python_platform == "aarch64-manylinux2014"
    assert Platform("python3.13", "arm64").python_version == "3.13"


@pytest.fixture(scope="module")
def aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto on loopback, and the environment the connector reads (as an operator would set it)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("AWS_DEFAULT_REGION", raising=False)
        patch.delenv("AWS_PROFILE", raising=False)
        iam = boto3.client("iam", region_name="eu-west-1")
        role = iam.create_role(RoleName="dify-plugins", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        patch.setenv("AWS_LAMBDA_ROLE_ARN", role)
        patch.setenv("AWS_LAMBDA_RUNTIME", "python3.12")
        try:
            yield {**env, "AWS_LAMBDA_ROLE_ARN": role}
        finally:
            server.stop()


def test_the_provider_refuses_to_start_without_a_role(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_ROLE_ARN", raising=False)
    options = ConnectorOptions(api_key="k", public_url="http://x", home=tmp_path)
    with pytest.raises(ValueError, match="AWS_LAMBDA_ROLE_ARN"):
        load_provider("aws_lambda", options)


@pytest.fixture(scope="module")
def connector(aws: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    options = ConnectorOptions(
        api_key=CONNECTOR_KEY,
        public_url="http://127.0.0.1:1",
        home=tmp_path_factory.mktemp("lambda-connector"),
        daemon_url=DAEMON_URL,
        function_timeout=600.0,
        signing_secret=SECRET,
    )
    provider = load_provider("aws_lambda", options)
    assert isinstance(provider, AwsLambdaProvider)
    server = AppServer(create_connector_app(provider, options), "lambda connector", {"Authorization": CONNECTOR_KEY})
    server.provider = provider  # type: ignore[attr-defined]
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def echo_package() -> tuple[str, bytes]:
    data = build_package(PLUGINS / "echo_tool")
    return str(decode_package(data).identifier), data


@pytest.fixture(scope="module")
def deployed(connector: AppServer, echo_package: tuple[str, bytes]) -> dict[str, Any]:
    """echo_tool launched through the connector with this daemon's SRI client (builds with uv: slow)."""
    identifier, data = echo_package
    steps: list[str] = []

    async def launch() -> Any:
        async with httpx.AsyncClient() as http:
            client = ConnectorClient(connector.url, CONNECTOR_KEY, http, launch_timeout=LAUNCH_DEADLINE)
            return await client.launch(identifier, data, verified=False, progress=steps.append)

    function = anyio.run(launch)
    return {"function": function, "steps": steps, "identifier": identifier}


@pytest.mark.slow
def test_launch_creates_the_function_and_its_streaming_url(deployed: dict[str, Any], aws: dict[str, str]) -> None:
    function = deployed["function"]
    client = boto3.client("lambda", region_name="eu-west-1")
    got = client.get_function(FunctionName=function.name)
    configuration = got["Configuration"]
    assert configuration["Runtime"] == "python3.12"
    assert configuration["MemorySize"] == 256  # the manifest's 268435456 bytes
    assert configuration["Timeout"] == 600
    assert configuration["Role"] == aws["AWS_LAMBDA_ROLE_ARN"]
    assert configuration["Architectures"] == ["x86_64"]
    variables = configuration["Environment"]["Variables"]
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/bootstrap"
    assert variables["DIFY_PLUGIN_DAEMON_URL"] == DAEMON_URL
    assert variables["DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET"] == SECRET
    assert got["Tags"]["dify-plugin-identifier"] == deployed["identifier"]
    url = client.get_function_url_config(FunctionName=function.name)
    assert url["InvokeMode"] == "RESPONSE_STREAM" and url["AuthType"] == "NONE"
    assert function.endpoint == url["FunctionUrl"]
    assert any("manylinux2014" in step for step in deployed["steps"])


@pytest.mark.slow
def test_launch_writes_the_serverless_yml_equivalent(deployed: dict[str, Any], connector: AppServer) -> None:
    name = deployed["function"].name
    folder = connector.provider.folder / name  # type: ignore[attr-defined]
    config = yaml.safe_load((folder / "serverless.yml").read_text())
    assert config["provider"]["name"] == "aws" and config["provider"]["memorySize"] == 256
    assert config["provider"]["region"] == "eu-west-1"
    plugin = config["functions"]["plugin"]
    assert plugin["name"] == name and plugin["url"] == {"invokeMode": "RESPONSE_STREAM"}
    assert (
        plugin["environment"]["DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET"] == "${env:DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET}"
    )
    assert SECRET not in (folder / "serverless.yml").read_text()
    assert Path(config["package"]["artifact"]).is_file()


@pytest.mark.slow
def test_go_daemon_finds_the_function_and_a_second_launch_reuses_it(
    deployed: dict[str, Any], connector: AppServer, echo_package: tuple[str, bytes]
) -> None:
    identifier, data = echo_package
    go = GoSRIClient(connector.url, CONNECTOR_KEY)
    try:
        go.ping()
        found = go.fetch_function(package_filename(identifier))
        assert found is not None and found["function_url"] == deployed["function"].endpoint
        assert found["function_drn"].startswith("arn:aws:lambda:eu-west-1:")
        events = go.setup_function(package_filename(identifier), data, identifier, verified=False)
        assert [event.event for event in events][-3:] == ["function", "function_url", "done"]
        assert events[-2].message == deployed["function"].endpoint
    finally:
        go.close()


@pytest.fixture(scope="module")
def unpacked(deployed: dict[str, Any], connector: AppServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    name = deployed["function"].name
    archive = next((connector.provider.folder / name).glob("*.zip"))  # type: ignore[attr-defined]
    root = tmp_path_factory.mktemp("var-task")
    with zipfile.ZipFile(archive) as opened:
        for info in opened.infolist():
            opened.extract(info, root)
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / info.filename, mode & 0o777)
    return root


@pytest.fixture(scope="module")
def function_process(unpacked: Path) -> Iterator[LambdaRuntimeAPI]:
    """The package's bootstrap, run as Lambda runs it (exec wrapper, /var/task layout) on Python 3.12."""
    python = anyio.run(InterpreterFinder(uv_bin=None).find, "3.12")
    api = LambdaRuntimeAPI().start()
    env = {
        "PATH": f"{Path(python.path).parent}:/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "LAMBDA_TASK_ROOT": str(unpacked),
        "DIFY_PLUGIN_DAEMON_URL": DAEMON_URL,
        "DIFY_PLUGIN_SERVERLESS_SIGNING_SECRET": SECRET,
        "DIFY_PLUGIN_HOME": str(unpacked.parent / "tmp"),
        "DIFY_PLUGIN_READY_TIMEOUT": "60",
    }
    process = subprocess.Popen([str(unpacked / "bootstrap")], env=env, start_new_session=True)
    try:
        yield api
    finally:
        process.kill()
        process.wait(timeout=10)
        api.stop()


def url_event(body: bytes, *, signed: bool = True, path: str = "/invoke", query: str = "action=invoke_tool") -> dict:
    """A Function URL event (payload format 2.0), as Lambda delivers a daemon's call."""
    headers = {"content-type": "application/json", "dify-plugin-session-id": "lambda-session-1"}
    if signed:
        headers[SIGNATURE_HEADER.lower()] = sign(SECRET, body)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {"http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1"}},
        "body": base64.b64encode(body).decode(),
        "isBase64Encoded": True,
    }


def split_prelude(body: bytes) -> tuple[dict[str, Any], bytes]:
    prelude, _, rest = body.partition(PRELUDE_SEPARATOR)
    return orjson.loads(prelude), rest


@pytest.mark.slow
def test_the_built_package_streams_a_plugins_answer_to_a_function_url_event(
    function_process: LambdaRuntimeAPI,
) -> None:
    request_id = function_process.invoke(
        url_event(tool_request("lambda-session-1", "echo_tool", "ticks", {"count": 3, "interval": 0.5}))
    )
    answer = function_process.answer(request_id, CALL_DEADLINE)
    assert answer.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert answer.headers["content-type"] == STREAM_CONTENT_TYPE
    prelude, body = split_prelude(answer.body)
    assert prelude["statusCode"] == 200
    frames = [orjson.loads(line) for line in body.split(b"\n") if line.strip()]
    session = [frame["data"] for frame in frames if frame.get("event") == "session"]
    assert [message["type"] for message in session] == ["stream", "stream", "stream", "end"]
    assert [message["data"]["message"]["text"] for message in session[:3]] == ["0", "1", "2"]
    # streamed: the frames reached the Runtime API as the plugin produced them, 0.5 s apart
    carrying = [at for at, chunk in answer.chunks if b'"stream"' in chunk]
    assert len(carrying) >= 3 and carrying[-1] - carrying[0] >= 0.8, answer.chunks


@pytest.mark.slow
def test_the_built_package_refuses_unsigned_and_unknown_calls(function_process: LambdaRuntimeAPI) -> None:
    body = tool_request("lambda-session-1", "echo_tool", "echo", {"text": "hi"})
    unsigned = function_process.answer(function_process.invoke(url_event(body, signed=False)), CALL_DEADLINE)
    prelude, rest = split_prelude(unsigned.body)
    assert prelude["statusCode"] == 401 and orjson.loads(rest)["errorType"] == "Unauthorized"
    elsewhere = function_process.answer(function_process.invoke(url_event(body, path="/admin")), CALL_DEADLINE)
    assert split_prelude(elsewhere.body)[0]["statusCode"] == 404
    signed = function_process.answer(function_process.invoke(url_event(body)), CALL_DEADLINE)
    prelude, rest = split_prelude(signed.body)
    assert prelude["statusCode"] == 200 and b'"text":"hi"' in rest.replace(b" ", b"")


def test_bootstrap_runs_the_streaming_loop_not_the_managed_one() -> None:
    assert "dify_lambda_runtime.py" in BOOTSTRAP and '"$@"' not in BOOTSTRAP.split("\n", 3)[-1]


def _small_spec(provider: AwsLambdaProvider, tmp_path: Path, name: str, memory: int, size: int = 0) -> FunctionSpec:
    artifact = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(artifact, "w") as archive:
        archive.writestr("dify_lambda_runtime.py", "")
        if size:
            archive.writestr("padding", os.urandom(size), compress_type=zipfile.ZIP_STORED)
    return FunctionSpec(
        name=name,
        runtime="python3.12",
        architecture="x86_64",
        memory_mb=memory,
        timeout=30,
        role=provider.role,
        region="eu-west-1",
        artifact=artifact,
        tags={"dify-plugin-checksum": "c" * 64},
    )


def test_code_through_s3_and_an_update_of_an_existing_function(
    aws: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("s3", region_name="eu-west-1").create_bucket(
        Bucket="plugin-code", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    monkeypatch.setenv("AWS_LAMBDA_CODE_BUCKET", "plugin-code")
    options = ConnectorOptions(api_key="k", public_url="http://x", home=tmp_path)
    provider = load_provider("aws_lambda", options)
    assert isinstance(provider, AwsLambdaProvider)
    url = provider._deploy_function(_small_spec(provider, tmp_path, "dify-s3-code", 128))
    objects = boto3.client("s3", region_name="eu-west-1").list_objects_v2(Bucket="plugin-code")["Contents"]
    assert [item["Key"] for item in objects] == ["dify-plugins/dify-s3-code.zip"]
    assert provider._deploy_function(_small_spec(provider, tmp_path, "dify-s3-code", 512)) == url  # updated
    configuration = boto3.client("lambda", region_name="eu-west-1").get_function(FunctionName="dify-s3-code")
    assert configuration["Configuration"]["MemorySize"] == 512


def test_a_package_over_the_inline_limit_needs_a_bucket(aws: dict[str, str], tmp_path: Path) -> None:
    options = ConnectorOptions(api_key="k", public_url="http://x", home=tmp_path)
    provider = load_provider("aws_lambda", options)
    assert isinstance(provider, AwsLambdaProvider) and not provider.bucket
    spec = _small_spec(provider, tmp_path, "dify-too-big", 128, size=MAX_INLINE_ZIP + 1)
    with pytest.raises(LaunchFailed, match="AWS_LAMBDA_CODE_BUCKET"):
        provider._deploy_function(spec)
