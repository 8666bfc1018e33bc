"""A 200 that is not what was asked for is an upstream failure, never a success: 502 before the
first byte, the dialect's error event after it (SPEC §10), unary and streamed, over both core
transports, against a fault-injecting replica on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Gateway, GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def replica() -> AsyncIterator[FaultyUpstream]:
    fake = await FaultyUpstream("a").start()
    yield fake
    await fake.stop()


@pytest.fixture
async def gw(replica: FaultyUpstream, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory({"auth": {"enabled": False}, "models": [
        {"id": "m", "task": "chat", "provider": "openai", "upstream_url": replica.base_url}]})


async def _post(gw: Gateway, stream: bool) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": stream}) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize("fault", ["garbage", "not_sse", "no_choices", "empty", "reset_before"])
async def test_a_broken_stream_is_a_502_before_the_first_byte(
        gw: Gateway, replica: FaultyUpstream, fault: str) -> None:
    replica.fault = fault
    status, headers, body = await _post(gw, stream=True)
    assert status == 502, body
    assert headers["Content-Type"].startswith("application/json")
    err = orjson.loads(body)["error"]
    assert err["code"] == "bad_gateway"
    assert "127.0.0.1" not in err["message"] and str(replica.port) not in err["message"]


@pytest.mark.parametrize("fault", ["garbage", "no_choices"])
async def test_a_broken_unary_answer_is_a_502(
        gw: Gateway, replica: FaultyUpstream, fault: str) -> None:
    replica.fault = fault
    status, _, body = await _post(gw, stream=False)
    assert status == 502, body
    assert orjson.loads(body)["error"]["code"] == "bad_gateway"


async def test_a_stream_cut_after_tokens_ends_with_an_error_event(
        gw: Gateway, replica: FaultyUpstream) -> None:
    replica.fault = "reset"
    status, _, body = await _post(gw, stream=True)
    assert status == 200
    frames = [f for f in body.split(b"\n\n") if f.startswith(b"data: ")]
    texts = [orjson.loads(f[6:]) for f in frames if f != b"data: [DONE]"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in texts
                   if c.get("choices")) == "a says"
    assert "error" in texts[-1], texts[-1]
    assert "127.0.0.1" not in texts[-1]["error"]["message"]


async def test_the_sdk_sees_a_failed_stream_as_an_error(
        gw: Gateway, replica: FaultyUpstream) -> None:
    replica.fault = "empty"
    client = openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass
    assert info.value.status_code == 502


async def test_an_upstream_429_keeps_its_retry_after(
        gw: Gateway, replica: FaultyUpstream) -> None:
    replica.fault, replica.retry_after = "429", "30"  # longer than the gateway waits itself
    for stream in (False, True):
        status, headers, _ = await _post(gw, stream)
        assert (status, headers.get("Retry-After")) == (429, "30")
