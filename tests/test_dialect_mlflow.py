"""The mlflow dialect (seed 002) with MLflow's own deployments client and raw HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
import requests
from mlflow.deployments import get_deploy_client as _get_deploy_client

from http_edge.dialects import mlflow_wire
from tests.conftest import Gateway, GatewayFactory, base_config, fake_models
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

CHAT = {"messages": [{"role": "user", "content": "Hello, how are you?"}]}


def get_deploy_client(url: str) -> Any:
    return _get_deploy_client(url)  # type: ignore[no-untyped-call]


@pytest.fixture(autouse=True)
def no_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow's client retries 429/500/502/503 for minutes; a failing test must fail fast.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


@pytest.fixture
async def gw(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    models = fake_models(upstream.base_url)
    for m in models:
        m["aliases"] = {"fake-chat": ["chat"], "mock-embedding": ["embeddings"]}.get(m["id"], [])
    models.append({"id": "mock-completion", "task": "completion", "provider": "mock",
                   "aliases": ["completions"]})
    models.append({"id": "mock-rerank", "task": "rerank", "provider": "mock"})
    return await gateway_factory(base_config(upstream.base_url, models=models,
                                             limits={"max_prompt_chars": 1000}))


async def test_predict_chat_completions_embeddings(gw: Gateway, upstream: FakeOpenAI) -> None:
    def run() -> tuple[Any, Any, Any]:
        client = get_deploy_client(gw.http)
        chat = client.predict(endpoint="chat", inputs={
            "messages": [{"role": "user", "content": "What is MLflow?"}], "temperature": 0.7})
        completion = client.predict(endpoint="completions", inputs={
            "prompt": "The future of AI is", "max_tokens": 3})
        embeddings = client.predict(endpoint="embeddings",
                                    inputs={"input": ["Hello world", "MLflow AI Gateway"]})
        return chat, completion, embeddings

    chat, completion, embeddings = await asyncio.to_thread(run)
    assert chat["object"] == "chat.completion" and chat["model"] == "chat"
    assert chat["choices"][0]["message"]["content"] == REPLY
    assert chat["usage"]["prompt_tokens"] == 12
    sent = upstream.requests[-1].body
    assert sent["model"] == "llama" and sent["temperature"] == 0.7
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == "This is a"
    vectors = [item["embedding"] for item in embeddings["data"]]
    assert len(vectors) == 2 and all(isinstance(x, float) for x in vectors[0])
    assert vectors[0] != vectors[1] and embeddings["object"] == "list"


async def test_list_and_get_endpoints(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_wire, "PAGE_SIZE", 3)  # the client must follow next_page_token

    def run() -> tuple[list[Any], Any]:
        client = get_deploy_client(gw.http)
        return client.list_endpoints(), client.get_endpoint("chat")

    listed, chat = await asyncio.to_thread(run)
    # Every chat, completion and embedding model in config order; a rerank model is no endpoint.
    assert [e.name for e in listed] == llm_ids(gw)
    assert len(listed) > 3 and "mock-rerank" not in llm_ids(gw)
    by_name = {e.name: e for e in listed}
    assert by_name["mock-embedding"].endpoint_type == "llm/v1/embeddings"
    assert by_name["mock-completion"].endpoint_type == "llm/v1/completions"
    assert chat.model_dump() == {
        "name": "chat", "endpoint_type": "llm/v1/chat",
        "model": {"name": "llama", "provider": "openai"},
        "endpoint_url": f"{gw.http}/gateway/chat/invocations", "limit": None,
    }


async def test_paging_over_raw_http(gw: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mlflow_wire, "PAGE_SIZE", 5)
    status, first = await raw(gw, "GET", "/api/2.0/endpoints/")
    assert status == 200 and len(first["endpoints"]) == 5
    status, second = await raw(gw, "GET",
                               f"/api/2.0/endpoints/?page_token={first['next_page_token']}")
    assert status == 200
    names = [e["name"] for e in first["endpoints"] + second["endpoints"]]
    token = second.get("next_page_token")
    while token:
        status, page = await raw(gw, "GET", f"/api/2.0/endpoints/?page_token={token}")
        names += [e["name"] for e in page["endpoints"]]
        token = page.get("next_page_token")
    assert names == llm_ids(gw)
    status, body = await raw(gw, "GET", "/api/2.0/endpoints/?page_token=bm90IGpzb24=")
    assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "invalid page_token" in body["detail"]


def llm_ids(gw: Gateway) -> list[str]:
    return [m.id for m in gw.config.models if m.task in ("chat", "completion", "embedding")]


async def raw(gw: Gateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, gw.http + path, json=body) as r:
        return r.status, await r.json()


async def stream(gw: Gateway, path: str, body: Any) -> tuple[int, list[Any]]:
    async with aiohttp.ClientSession() as s, s.post(gw.http + path, json=body) as r:
        data = await r.read()
    events = []
    for block in data.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            events.append(payload.decode() if payload == b"[DONE]" else orjson.loads(payload))
    return r.status, events


async def test_seed_curl_examples(gw: Gateway) -> None:
    status, chat = await raw(gw, "POST", "/gateway/chat/invocations", CHAT)
    assert status == 200 and chat["choices"][0]["message"]["content"] == REPLY
    status, done = await raw(gw, "POST", "/gateway/completions/invocations",
                             {"prompt": "The future of AI is", "max_tokens": 100})
    assert status == 200 and done["choices"][0]["text"].startswith("This is a mock reply")
    status, emb = await raw(gw, "POST", "/gateway/embeddings/invocations",
                            {"input": "Text to embed"})
    assert status == 200 and len(emb["data"]) == 1
    status, emb = await raw(gw, "POST", "/gateway/embeddings/invocations",
                            {"input": ["Text to embed", "Another text"], "encoding_format": "float"})
    assert status == 200 and [d["index"] for d in emb["data"]] == [0, 1]
    status, health = await raw(gw, "GET", "/health")
    assert status == 200 and health == {"status": "OK"}


async def test_streaming_chat_and_completions(gw: Gateway) -> None:
    status, events = await stream(gw, "/gateway/chat/invocations",
                                  {"messages": [{"role": "user", "content": "Write a story"}],
                                   "stream": True})
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == REPLY
    status, events = await stream(gw, "/endpoints/completions/invocations",
                                  {"prompt": "Once upon a time", "stream": True})
    assert status == 200 and events[-1] == "[DONE]"
    text = "".join(c["choices"][0]["text"] for c in events[:-1] if c["choices"])
    assert text == "This is a mock reply to: Once upon a time"


async def test_mid_stream_failure_ends_with_the_mlflow_error_event(gw: Gateway) -> None:
    status, events = await stream(gw, "/gateway/fake-miderror/invocations", {**CHAT,
                                                                           "stream": True})
    assert status == 200 and events[-1] == "[DONE]"
    assert events[-2]["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "CUDA out of memory" in events[-2]["detail"]


@pytest.mark.parametrize(("path", "body", "status", "fragment"), [
    ("/gateway/nope/invocations", CHAT, 404, "the model 'nope' does not exist"),
    ("/gateway/chat/invocations", {"input": "x"}, 400,
     "model 'fake-chat' serves the tasks 'chat', 'completion', not 'embedding'"),
    ("/gateway/embeddings/invocations", CHAT, 400, "serves the task 'embedding', not 'chat'"),
    ("/gateway/chat/invocations", {"text": "x"}, 400,
     "the endpoint 'chat' is an llm/v1/chat endpoint: the body must hold 'messages'"),
    ("/gateway/embeddings/invocations", {}, 400, "the body must hold 'input'"),
    ("/gateway/mock-rerank/invocations", {"query": "x"}, 404, "is not an MLflow endpoint"),
    ("/gateway/chat/invocations", {"messages": "hi"}, 400, "'messages' must be an array"),
    ("/gateway/chat/invocations", {**CHAT, "temperature": "hot"}, 400,
     "'temperature' must be a number"),
    ("/gateway/embeddings/invocations", {"input": [1, 2]}, 400, "token ids"),
    ("/gateway/chat/invocations", {**CHAT, "max_tokens": 10**30}, 400,
     "'max_tokens' must be an integer between 1 and 4294967295"),
    ("/gateway/chat/invocations", {**CHAT, "seed": 2**64}, 400, "'seed' must be an integer"),
    ("/gateway/chat/invocations", {"messages": [{"role": "user", "content": "x" * 1001}]}, 413,
     "the prompt is 1001 characters long"),
])
async def test_bad_inputs(gw: Gateway, path: str, body: Any, status: int, fragment: str) -> None:
    got, answer = await raw(gw, "POST", path, body)
    assert got == status
    assert set(answer) == {"detail", "error_code"} and fragment in answer["detail"]


async def test_client_errors(gw: Gateway) -> None:
    def run() -> list[BaseException]:
        client = get_deploy_client(gw.http)
        got: list[BaseException] = []
        calls: list[Callable[[], Any]] = [
            lambda: client.get_endpoint("nope"),
            lambda: client.get_endpoint("mock-rerank"),
            lambda: client.predict(endpoint="fake-500", inputs=CHAT),
        ]
        for call in calls:
            try:
                call()
            except Exception as exc:
                got.append(exc)
        return got

    missing, rerank, upstream_failed = await asyncio.to_thread(run)
    assert isinstance(missing, requests.HTTPError) and "404" in str(missing)
    assert "RESOURCE_DOES_NOT_EXIST" in str(missing)
    assert "not present or active" in str(rerank)
    assert "502" in str(upstream_failed) and "HTTP 500" in str(upstream_failed)
