"""Non-streaming requests to OpenAI-compatible upstreams are streamed from the upstream and
assembled (SPEC §10, ``options.unary_via_stream``): first-token and idle timeouts, retries before
the first token and a caller that leaves stop generation for them too; a model opts out."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.traffic.conftest import Replicas, chat, config, model


async def _disconnected(fake: FaultyUpstream) -> bool:
    for _ in range(100):
        if fake.disconnects:
            return True
        await asyncio.sleep(0.01)
    return False


async def test_a_unary_answer_is_assembled_from_the_upstream_stream(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("ok")
    gw = await gateway_factory(config(model("m", a.base_url)))
    status, headers, body = await chat(gw, "m")
    assert status == 200, body
    answer = orjson.loads(body)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant",
                                               "content": "a says hello world"}
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] > 0
    assert a.requests[-1]["stream"] is True
    assert headers["x-gateway-attempts"] == "1"


@pytest.mark.parametrize(("fault", "stage"), [("slow_first_token", "first_token"),
                                               ("stall", "idle")])
async def test_stage_timeouts_of_streams_hold_for_unary_requests(
        replicas: Replicas, gateway_factory: GatewayFactory, fault: str, stage: str) -> None:
    (a,) = await replicas(fault, delay=5.0)
    gw = await gateway_factory(config(model("m", a.base_url, timeouts={stage: 0.3})))
    started = time.monotonic()
    status, _, body = await chat(gw, "m")
    took = time.monotonic() - started
    assert status == 504, body
    assert 0.3 <= took < 0.8, took
    assert f"timeouts.{stage}" in orjson.loads(body)["error"]["message"]
    assert await _disconnected(a)


async def test_a_unary_request_is_retried_when_the_stream_breaks_before_its_first_token(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("reset_before", "ok")
    gw = await gateway_factory(config(model("m", a.base_url, b.base_url)))
    status, headers, body = await chat(gw, "m")
    assert status == 200, body
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "b says hello world"
    assert headers["x-gateway-attempts"] == "2"


async def test_a_unary_answer_cut_after_tokens_is_a_502_not_a_partial_answer(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("reset")
    gw = await gateway_factory(config(model("m", a.base_url)))
    status, _, body = await chat(gw, "m")
    assert status == 502, body
    assert "choices" not in orjson.loads(body)


async def test_a_caller_that_leaves_stops_the_generation(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("stall", delay=30.0)
    gw = await gateway_factory(config(model("m", a.base_url)))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.post(f"{gw.http}/v1/chat/completions",
                              json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                              timeout=aiohttp.ClientTimeout(total=0.5)) as resp:
                await resp.read()
    assert await _disconnected(a)


async def test_the_assembled_answer_is_bounded_by_max_response_bytes(
        gateway_factory: GatewayFactory) -> None:
    fake = await FaultyUpstream("a", "ok", text=" ".join(["word"] * 400)).start()
    try:
        gw = await gateway_factory(config(model("m", fake.base_url, max_response_bytes=1000)))
        status, _, body = await chat(gw, "m")
        assert status == 502, body
        assert "more than 1000 bytes" in orjson.loads(body)["error"]["message"]
    finally:
        await fake.stop()


async def test_a_model_opts_out_and_a_request_for_prompt_logprobs_goes_unary(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("ok")
    gw = await gateway_factory(config(
        model("m", a.base_url),
        model("plain", a.base_url, options={"unary_via_stream": False})))
    status, _, body = await chat(gw, "plain")
    assert status == 200, body
    assert "stream" not in a.requests[-1]
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}/v1/chat/completions",
            json={"model": "m", "prompt_logprobs": 1,
                  "messages": [{"role": "user", "content": "x"}]}) as resp:
        assert resp.status == 200, await resp.text()
    assert "stream" not in a.requests[-1]
    assert a.requests[-1]["prompt_logprobs"] == 1
