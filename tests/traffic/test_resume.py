"""Streams that survive a replica (SPEC §10, ``resume_streams``): when an endpoint dies after
tokens were sent, another continues from the prompt plus the text already sent; the client's
stream goes on with no token lost or repeated. Without it, the error event rule holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import Gateway, GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.traffic.conftest import chat, config, model

TEXT = "one two three four five six"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "count"}]


@pytest.fixture
async def trio() -> AsyncIterator[list[FaultyUpstream]]:
    fakes = [await FaultyUpstream(n, "ok", text=TEXT, delay=5.0).start() for n in "abc"]
    yield fakes
    for f in fakes:
        await f.stop()


def _frames(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(f[6:]) for f in body.split(b"\n\n")
            if f.startswith(b"data: {")]


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_a_stream_moves_to_another_replica_without_losing_a_token(
        trio: list[FaultyUpstream], gateway_factory: GatewayFactory, fault: str) -> None:
    a, b, c = trio
    a.fault = fault
    gw = await gateway_factory(config(model("m", a.base_url, b.base_url, c.base_url,
                                            resume_streams=True, timeouts={"idle": 0.3})))
    status, _, body = await chat(gw, "m", stream=True)
    assert status == 200
    frames = _frames(body)
    assert not any("error" in f for f in frames), frames
    text = "".join(ch["delta"].get("content") or "" for f in frames
                   for ch in f.get("choices") or ())
    assert text == TEXT
    assert len({f["id"] for f in frames}) == 1
    continued = b.requests[-1]
    assert continued["continue_final_message"] is True
    assert continued["messages"][-1] == {"role": "assistant", "content": "one two"}
    assert body.endswith(b"data: [DONE]\n\n")


async def test_the_sdk_reads_one_whole_answer_and_usage_counts_both_attempts(
        trio: list[FaultyUpstream], gateway_factory: GatewayFactory) -> None:
    a, b, _ = trio
    a.fault = "reset"
    gw: Gateway = await gateway_factory(config(model("m", a.base_url, b.base_url,
                                                     resume_streams=True)))
    client = openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="x", max_retries=0)
    stream = await client.chat.completions.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    text, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text) == TEXT
    # the continuation's words, plus "one two" sent before the move
    assert usage is not None and usage.completion_tokens >= 2 + 2


async def test_without_resume_the_stream_ends_with_an_error_event(
        trio: list[FaultyUpstream], gateway_factory: GatewayFactory) -> None:
    a, b, _ = trio
    a.fault = "reset"
    gw = await gateway_factory(config(model("m", a.base_url, b.base_url)))
    status, _, body = await chat(gw, "m", stream=True)
    assert status == 200
    assert "error" in _frames(body)[-1]
    assert not b.requests


async def test_at_most_two_moves(trio: list[FaultyUpstream], gateway_factory: GatewayFactory,
                                 ) -> None:
    for f in trio:
        f.fault = "reset"
    extra = await FaultyUpstream("d", "ok", text=TEXT).start()
    try:
        gw = await gateway_factory(config(model("m", *(f.base_url for f in trio), extra.base_url,
                                                resume_streams=True)))
        status, _, body = await chat(gw, "m", stream=True)
        assert status == 200 and "error" in _frames(body)[-1]
        assert not extra.requests
    finally:
        await extra.stop()


def test_resume_needs_an_openai_upstream() -> None:
    from gateway_common.config import ConfigError, parse_config
    from gateway_core.providers.base import SessionPool
    from gateway_core.registry import ModelRegistry

    cfg = parse_config(config({"id": "t", "task": "chat", "provider": "tgi",
                               "upstream_url": "http://x:1", "resume_streams": True}))
    with pytest.raises(ConfigError, match="resume_streams"):
        ModelRegistry.from_config(cfg, SessionPool())
