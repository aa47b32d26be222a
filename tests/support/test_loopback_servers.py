"""Self-tests of the loopback stand-ins: the OpenAI-compatible server and Dify's inner API."""

from __future__ import annotations

import json
import threading
import time

import anyio
import httpx
import pytest

from tests.support.dify_inner_api import DifyInnerAPI, frame, parse_frames
from tests.support.openai_server import OpenAIServer


def sse_payloads(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.split("\n\n") if line.startswith("data: ")]


# -- OpenAIServer -------------------------------------------------------------------------------


def test_openai_models_and_stream() -> None:
    with OpenAIServer(chunks=4) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.url.endswith("/v1")
        models = httpx.get(server.url + "/models").json()
        assert models["data"][0]["id"] == "mock-model"

        body = {"model": "mock-model", "messages": [{"role": "user", "content": "one two"}], "stream": True}
        response = httpx.post(server.url + "/chat/completions", json=body)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(response.text)
        assert payloads[-1] == "[DONE]"
        chunks = [json.loads(p) for p in payloads[:-1]]
        assert len(chunks) == 5  # 4 content chunks + finish/usage
        content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        assert content == server.expected_content() == server.expected_content(chunks=4)
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}

        recorded = server.wait_for_requests(2, timeout=5)
        assert [(r.method, r.path) for r in recorded] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
        assert recorded[1].json == body


def test_openai_blocking_and_model_name_overrides() -> None:
    with OpenAIServer(chunks=7) as server:
        response = httpx.post(
            server.url + "/chat/completions",
            json={"model": "m?chunks=3&text=alpha+beta", "messages": []},
        ).json()
        assert response["choices"][0]["message"]["content"] == "alpha beta alpha"
        assert response["usage"]["completion_tokens"] == 3

        server.configure(chunks=2, text="x y z")
        response = httpx.post(server.url + "/chat/completions", json={"model": "m", "messages": []}).json()
        assert response["choices"][0]["message"]["content"] == "x y" == server.expected_content()


def test_openai_failure_modes() -> None:
    with OpenAIServer(api_key="secret") as server:
        assert httpx.get(server.url + "/models").status_code == 401
        ok = httpx.get(server.url + "/models", headers={"Authorization": "Bearer secret"})
        assert ok.status_code == 200

        server.configure(api_key=None, status=503)
        assert httpx.get(server.url + "/models").status_code == 503

        server.configure(status=None, drop_after=2)
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(server.url + "/chat/completions", json={"model": "m", "messages": [], "stream": True})


def test_openai_delay_streams_at_pace() -> None:
    with OpenAIServer(chunks=3, delay=0.2) as server:
        arrivals = []
        body = {"model": "m", "messages": [], "stream": True}
        with httpx.stream("POST", server.url + "/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 4
        assert arrivals[2] - arrivals[0] >= 0.35  # two delays between the content chunks


def test_openai_stop_releases_a_slow_stream() -> None:
    server = OpenAIServer(chunks=100, delay=5.0).start()
    failed = threading.Event()

    def client() -> None:
        try:
            httpx.post(server.url + "/chat/completions", json={"model": "m", "messages": [], "stream": True})
        except httpx.HTTPError:
            failed.set()

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    server.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    server.stop()
    thread.join(10)
    assert time.monotonic() - started < 5
    assert failed.is_set()


def test_openai_async_context_manager() -> None:
    async def main() -> str:
        async with OpenAIServer(chunks=2) as server, httpx.AsyncClient() as client:
            response = await client.post(server.url + "/chat/completions", json={"model": "m", "messages": []})
            return str(response.json()["choices"][0]["message"]["content"])

    assert anyio.run(main) == "The quick"


# -- DifyInnerAPI -------------------------------------------------------------------------------


def post(api: DifyInnerAPI, path: str, body: dict | None = None, key: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{api.url}/inner/api/{path}",
        json=body or {},
        headers={"X-Inner-Api-Key": api.key if key is None else key},
        timeout=10,
    )


def test_inner_api_key_mismatch_is_404() -> None:
    with DifyInnerAPI(key="right") as api:
        assert post(api, "invoke/summary", {"text": "t"}, key="wrong").status_code == 404
        assert httpx.post(f"{api.url}/inner/api/invoke/summary", json={}).status_code == 404
        assert post(api, "invoke/summary", {"text": "t"}).status_code == 200
        assert len(api.requests) == 3
        assert api.requests[0].header("x-inner-api-key") == "wrong"


def test_inner_api_llm_stream_frames() -> None:
    with DifyInnerAPI() as api:
        body = {"tenant_id": "t1", "user_id": "u1", "type": "llm", "model": "gpt", "prompt_messages": []}
        response = post(api, "invoke/llm", body)
        assert response.status_code == 200
        assert response.content[:4] == bytes([0x0F, 0, 0x0A, 0])
        frames = parse_frames(response.content)
        assert all(f["error"] == "" for f in frames)
        text = "".join(f["data"]["delta"]["message"]["content"] for f in frames)
        assert text == api.expected_llm_text()
        assert frames[-1]["data"]["delta"]["finish_reason"] == "stop"
        assert frames[-1]["data"]["delta"]["usage"]["completion_tokens"] == len(frames)
        assert api.calls("invoke/llm")[0].json == body


def test_inner_api_tool_stream_and_json_routes() -> None:
    with DifyInnerAPI() as api:
        frames = parse_frames(post(api, "invoke/tool", {"provider": "p", "tool": "t"}).content)
        assert [f["data"]["message"]["text"] for f in frames] == ["tool says hi"]

        api.behave("invoke/tool", chunks=3)
        assert len(parse_frames(post(api, "invoke/tool").content)) == 3

        assert post(api, "invoke/summary", {"text": "abcd"}).json() == {
            "data": {"summary": "summary of 4 chars"},
            "error": "",
        }
        embedding = post(api, "invoke/text-embedding", {"model": "e", "texts": ["a", "bb"]}).json()
        assert len(embedding["data"]["embeddings"]) == 2 and embedding["error"] == ""
        assert post(api, "fetch/app/info", {"app_id": "a1"}).json()["data"]["id"] == "a1"

        encrypted = post(api, "invoke/encrypt", {"opt": "encrypt", "data": {"k": "v"}}).json()
        assert encrypted == {"data": {"data": {"k": "enc:v"}}, "error": ""}
        decrypted = post(api, "invoke/encrypt", {"opt": "decrypt", "data": {"k": "enc:v"}}).json()
        assert decrypted["data"] == {"data": {"k": "v"}}
        assert post(api, "invoke/encrypt", {"opt": "bogus"}).json() == {"data": None, "error": "Invalid opt: bogus"}

        api.json_answers["fetch/app/info"] = {"id": "fixed"}
        assert post(api, "fetch/app/info").json()["data"] == {"id": "fixed"}


def test_inner_api_failure_modes() -> None:
    with DifyInnerAPI() as api:
        api.behave("invoke/llm", status=500)
        assert post(api, "invoke/llm").status_code == 500
        assert post(api, "invoke/summary", {"text": "x"}).status_code == 200  # other routes unaffected

        api.behave("invoke/llm", status=200, garbage=True)
        content = post(api, "invoke/llm").content
        assert content[0] != 0x0F
        with pytest.raises(ValueError, match="bad frame header"):
            parse_frames(content)

        api.reset()
        api.behave("invoke/llm", error="model exploded", chunks=2)
        frames = parse_frames(post(api, "invoke/llm").content)
        assert len(frames) == 3 and frames[-1] == {"data": None, "error": "model exploded"}
        api.behave("invoke/summary", error="nope")
        assert post(api, "invoke/summary").json() == {"data": None, "error": "nope"}

        api.reset()
        api.behave("invoke/llm", chunks=4, delay=0.15)
        started = time.monotonic()
        assert len(parse_frames(post(api, "invoke/llm").content)) == 4
        assert time.monotonic() - started >= 0.4


def test_inner_api_stall_is_released_by_stop() -> None:
    api = DifyInnerAPI().start()
    api.behave("*", stall=60)
    outcome: list[BaseException | int] = []

    def client() -> None:
        try:
            outcome.append(post(api, "invoke/llm").status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    api.wait_for_requests(1, timeout=5)
    started = time.monotonic()
    api.stop()
    thread.join(10)
    assert time.monotonic() - started < 5
    assert outcome and isinstance(outcome[0], httpx.HTTPError)


def test_frame_helper_matches_dify_layout() -> None:
    payload = {"data": {"x": 1}, "error": ""}
    raw = frame(payload)
    data = json.dumps(payload).encode()
    assert raw[:14] == bytes([0x0F, 0, 0x0A, 0]) + len(data).to_bytes(4, "little") + b"\x00" * 6
    assert raw[14:] == data
    assert parse_frames(raw + raw) == [payload, payload]
