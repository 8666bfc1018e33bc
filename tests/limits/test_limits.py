"""Limits (SPEC §11) in one process: requests and tokens per minute, budgets, concurrency, per
model and per token, with OpenAI's x-ratelimit-* headers, 429 in each dialect's shape, gRPC's
RESOURCE_EXHAUSTED with the same values as trailers."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import grpc
import openai
import orjson
import pytest

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream

CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "hello there"}]}


def limited(model_id: str, url: str, **limits: int) -> dict[str, Any]:
    return {"id": model_id, "task": "chat", "tasks": ["chat", "completion"], "provider": "openai",
            "upstream_url": url, "limits": limits}


async def post(gw: Gateway, path: str, body: dict[str, Any],
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.http + path, json=body,
                                                    headers=headers or {}) as r:
        data = await r.read()
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = data
        return r.status, dict(r.headers), parsed


@pytest.fixture
async def upstream() -> Any:
    fake = await FaultyUpstream("a", "ok").start()
    yield fake
    await fake.stop()


async def test_requests_per_minute_of_a_model(upstream: FaultyUpstream,
                                              gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, rpm=3)]})
    remaining = []
    for _ in range(3):
        status, headers, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "3"
        remaining.append(headers["x-ratelimit-remaining-requests"])
        assert headers["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["2", "1", "0"]
    status, headers, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    assert status == 429
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "model 'm' is over its limit of 3 requests per minute" in body["error"]["message"]
    assert 1 <= int(headers["Retry-After"]) <= 20
    assert len(upstream.requests) == 3  # the refused request never reached the upstream


async def test_tokens_per_minute_are_reconciled_with_the_usage(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, tpm=1000)]})
    status, headers, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    assert status == 200
    used = body["usage"]["total_tokens"]
    # At admission the estimate was charged; the next answer shows the real usage charged.
    status, headers, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    left = int(headers["x-ratelimit-remaining-tokens"])
    estimate = 1000 - used - left  # this request's estimate, charged at its admission
    assert 0 < estimate < 100, (used, left)


async def test_a_request_larger_than_the_tokens_limit_is_refused_for_good(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, tpm=10)]})
    body = {"model": "m", "messages": [{"role": "user", "content": "word " * 200}]}
    status, headers, answer = await post(gw, "/v1/chat/completions", body)
    assert status == 429
    assert headers["x-should-retry"] == "false"
    assert "can never be admitted" in answer["error"]["message"]


async def test_a_spent_budget_is_insufficient_quota(upstream: FaultyUpstream,
                                                   gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, daily_tokens=30)]})
    status, _, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    assert status == 200
    for _ in range(20):  # the reconciliation runs off the request's path
        status, headers, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
        if status == 429:
            break
        await asyncio.sleep(0.01)
    assert status == 429
    assert body["error"]["code"] == "insufficient_quota"
    assert body["error"]["type"] == "insufficient_quota"
    assert headers["x-should-retry"] == "false"
    assert int(headers["Retry-After"]) <= 86400


async def test_the_sdk_sees_a_rate_limit_error(upstream: FaultyUpstream,
                                              gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, rpm=1)]})
    client = openai.AsyncOpenAI(base_url=gw.http + "/v1", api_key="x", max_retries=0)
    await client.chat.completions.create(model="m", messages=CHAT["messages"])
    with pytest.raises(openai.RateLimitError) as info:
        await client.chat.completions.create(model="m", messages=CHAT["messages"])
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["x-ratelimit-limit-requests"] == "1"


async def test_grpc_callers_get_resource_exhausted_and_the_values_as_trailers(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, rpm=1)]})
    request = pb.ChatRequest(model="m", messages=[pb.ChatMessage(role="user", content="hi")])
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        call = stub.Chat(request, timeout=10)
        await call
        trailers = dict(await call.trailing_metadata() or ())
        assert trailers["x-ratelimit-limit-requests"] == "1"
        assert trailers["x-ratelimit-remaining-requests"] == "0"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    refused = dict(info.value.trailing_metadata() or ())
    assert refused["igw-reason"] == "rate_limit_exceeded"
    assert int(refused["retry-after"]) >= 1


@pytest.mark.parametrize(("path", "body", "check"), [
    ("/generate", {"inputs": "hi"}, lambda b: b["error_type"] == "overloaded"),
    ("/invocations", {"messages": CHAT["messages"]}, lambda b: "error" in b),
])
async def test_other_dialects_answer_429_in_their_shape(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory, path: str,
        body: dict[str, Any], check: Any) -> None:
    gw = await gateway_factory({"auth": {"enabled": False}, "tgi_model": "m",
                                "models": [limited("m", upstream.base_url, rpm=1)]})
    await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    status, headers, answer = await post(gw, path, body)
    assert status == 429, answer
    assert check(answer), answer
    assert "Retry-After" in headers


async def test_a_stream_is_charged_for_its_usage_and_carries_the_headers(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False},
                                "models": [limited("m", upstream.base_url, rpm=5, tpm=1000)]})
    async with aiohttp.ClientSession() as s, s.post(
            gw.http + "/v1/chat/completions",
            json={**CHAT, "model": "m", "stream": True,
                  "stream_options": {"include_usage": True}}) as r:
        assert r.status == 200
        assert r.headers["x-ratelimit-remaining-requests"] == "4"
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        await r.read()


async def test_concurrency_of_a_model(gateway_factory: GatewayFactory) -> None:
    slow = await FaultyUpstream("a", "slow_headers", delay=1.0).start()
    try:
        gw = await gateway_factory({"auth": {"enabled": False},
                                    "models": [limited("m", slow.base_url, max_concurrency=2)]})
        results = await asyncio.gather(*(post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
                                         for _ in range(5)))
        statuses = sorted(r[0] for r in results)
        assert statuses == [200, 200, 429, 429, 429]
        # The slots are free again once the answers ended.
        await asyncio.sleep(0.05)
        status, _, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
        assert status == 200
    finally:
        await slow.stop()
