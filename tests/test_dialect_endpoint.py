"""The endpoint dialect (seed 001): the openai SDK pointed at ``/v2/{endpoint_id}/openai/v1``."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

ENDPOINTS = {"ep-1": ["fake-chat", "mock-chat", "fake-miderror", "mock-completion"],
             "ep-2": ["mock-chat"], "ep-emb": ["mock-embedding"]}


@pytest.fixture
async def gw(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    config = base_config(upstream.base_url, endpoints=ENDPOINTS, limits={"max_prompt_chars": 2000})
    config["models"].append({"id": "mock-completion", "task": "completion", "provider": "mock"})
    return await gateway_factory(config)


def client(gw: Gateway, endpoint_id: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v2/{endpoint_id}/openai/v1", api_key="API_KEY",
                              max_retries=0)


async def test_seed_chat_example_with_the_sdk(gw: Gateway, upstream: FakeOpenAI) -> None:
    c = client(gw, "ep-1")
    resp = await c.chat.completions.create(
        model="fake-chat",
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "Hello, who are you?"}],
        temperature=0.7, max_tokens=500,
    )
    assert resp.choices[0].message.content == REPLY
    assert resp.object == "chat.completion" and resp.model == "fake-chat"
    assert resp.usage is not None and resp.usage.total_tokens == 12 + len(REPLY.split(" "))
    sent = upstream.requests[-1].body
    assert sent["model"] == "llama" and sent["max_tokens"] == 500 and sent["temperature"] == 0.7


async def test_stream_and_completions(gw: Gateway) -> None:
    c = client(gw, "ep-1")
    stream = await c.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    text, usage = "", None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        usage = chunk.usage or usage
    assert text == REPLY and usage is not None
    done = await c.completions.create(model="mock-completion", prompt="Once upon", max_tokens=3)
    assert done.choices[0].text == "This is a" and done.choices[0].finish_reason == "length"
    pieces = [ch.choices[0].text async for ch in await c.completions.create(
        model="mock-completion", prompt="Once upon", stream=True) if ch.choices]
    assert "".join(pieces) == "This is a mock reply to: Once upon"


async def test_models_lists_the_endpoints_models_only(gw: Gateway) -> None:
    ids = [m.id async for m in client(gw, "ep-1").models.list()]
    # config order of the models
    assert ids == ["fake-chat", "fake-miderror", "mock-chat", "mock-completion"]
    assert [m.id async for m in client(gw, "ep-2").models.list()] == ["mock-chat"]


async def test_sync_sdk_in_a_thread(gw: Gateway) -> None:
    def call() -> str | None:
        c = openai.OpenAI(base_url=f"{gw.http}/v2/ep-2/openai/v1", api_key="k", max_retries=0)
        out = c.chat.completions.create(model="mock-chat",
                                        messages=[{"role": "user", "content": "ping"}])
        return out.choices[0].message.content

    assert await asyncio.to_thread(call) == "This is a mock reply to: ping"


@pytest.mark.parametrize(("endpoint_id", "model", "exc", "status", "fragment"), [
    ("nope", "mock-chat", openai.NotFoundError, 404, "the endpoint 'nope' does not exist"),
    ("ep-2", "fake-chat", openai.NotFoundError, 404,
     "'fake-chat' is not served by the endpoint 'ep-2' (it serves: mock-chat)"),
    ("ep-2", "no-such", openai.NotFoundError, 404, "the model 'no-such' does not exist"),
    ("ep-emb", "mock-embedding", openai.BadRequestError, 400, "serves the task 'embedding'"),
    ("bad%E2%9C%93id", "mock-chat", openai.NotFoundError, 404, "does not exist"),
])
async def test_errors(gw: Gateway, endpoint_id: str, model: str,
                      exc: type[openai.APIStatusError], status: int, fragment: str) -> None:
    with pytest.raises(exc) as info:
        await client(gw, endpoint_id).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert fragment in info.value.message


async def test_unknown_endpoint_models_is_404(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError, match="endpoint 'nope' does not exist"):
        [m async for m in client(gw, "nope").models.list()]


async def test_mid_stream_error_is_an_openai_error_event(gw: Gateway) -> None:
    stream = await client(gw, "ep-1").chat.completions.create(
        model="fake-miderror", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError, match="CUDA out of memory"):
        async for _ in stream:
            pass


async def raw(gw: Gateway, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, gw.http + path, json=body) as r:
        return r.status, await r.json()


async def test_raw_http_bad_inputs(gw: Gateway) -> None:
    base = "/v2/ep-1/openai/v1"
    status, body = await raw(gw, "POST", f"{base}/chat/completions", {"model": "mock-chat"})
    assert status == 400 and body["error"]["message"] == "'messages' is required"
    status, body = await raw(gw, "POST", f"{base}/chat/completions", {
        "model": "mock-chat", "messages": [{"role": "user", "content": "x" * 2001}]})
    assert status == 413
    assert body["error"]["message"] == "the prompt is 2001 characters long; the limit is 2000"
    status, body = await raw(gw, "POST", f"{base}/completions", {"model": "mock-completion",
                                                                "prompt": "y" * 2001})
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    status, body = await raw(gw, "GET", "/v2/ep-1/openai/v1/embeddings")
    assert status == 404 and "no route" in body["error"]["message"]
