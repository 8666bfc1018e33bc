"""The official openai SDK against the real edge and core, in front of the fake vLLM upstream."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import Gateway
from tests.fakes.openai_upstream import REPLY, FakeOpenAI


def client(gw: Gateway, **kw: object) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="unused", max_retries=0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", ["fake-chat", "fake-unary"])
async def test_chat_unary_async(gateway: Gateway, upstream: FakeOpenAI, model: str) -> None:
    """A non-streaming request is streamed from the upstream and assembled, unless the model
    opts out (``unary_via_stream: false``); the caller cannot tell."""
    c = client(gateway)
    resp = await c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is deep learning?"}],
        temperature=0.2, max_tokens=50,
    )
    assert resp.choices[0].message.content == REPLY
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.object == "chat.completion"
    assert resp.model == model
    assert resp.usage is not None and resp.usage.prompt_tokens == 12
    sent = upstream.requests[-1]
    assert sent.body["model"] == "llama"
    assert sent.body["temperature"] == 0.2 and sent.body["max_tokens"] == 50
    if model == "fake-unary":
        assert "stream" not in sent.body
    else:
        assert sent.body["stream"] is True
        assert sent.body["stream_options"] == {"include_usage": True}


async def test_chat_stream_async_with_usage(gateway: Gateway, upstream: FakeOpenAI) -> None:
    c = client(gateway)
    stream = await c.chat.completions.create(
        model="fake-chat", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text == REPLY
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == len(REPLY.split(" "))
    assert upstream.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_stream_usage_counted_when_upstream_silent(gateway: Gateway) -> None:
    c = client(gateway)
    stream = await c.chat.completions.create(
        model="fake-nousage", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
    assert usage is not None
    assert usage.completion_tokens == len(REPLY.split(" "))
    assert usage.model_extra == {"estimated": True}


async def test_sync_client_stream_and_unary(gateway: Gateway) -> None:
    # The sync client blocks, so it runs in a thread while the servers run on this loop.
    await asyncio.to_thread(_sync_client_calls, gateway)


def _sync_client_calls(gateway: Gateway) -> None:
    c = openai.OpenAI(base_url=f"{gateway.http}/v1", api_key="x", max_retries=0)
    resp = c.completions.create(model="fake-chat", prompt="Once upon", max_tokens=3)
    assert resp.choices[0].text == "Deep learning is"
    assert resp.choices[0].finish_reason == "length"
    pieces = [ch.choices[0].text for ch in c.completions.create(
        model="fake-chat", prompt="Once", stream=True) if ch.choices]
    assert "".join(pieces) == REPLY
    chat = c.chat.completions.create(model="mock-chat",
                                     messages=[{"role": "user", "content": "ping"}])
    assert chat.choices[0].message.content == "This is a mock reply to: ping"


async def test_models_list_and_get(gateway: Gateway) -> None:
    c = client(gateway)
    models = [m async for m in c.models.list()]
    by_id = {m.id: m for m in models}
    assert by_id["fake-chat"].model_extra == {"task": "chat", "tasks": ["chat", "completion"]}
    assert by_id["mock-embedding"].model_extra == {"task": "embedding", "tasks": ["embedding"]}
    got = await c.models.retrieve("fake-chat")
    assert got.id == "fake-chat" and got.owned_by == "inference-gateway"
    with pytest.raises(openai.NotFoundError):
        await c.models.retrieve("no-such-model")


@pytest.mark.parametrize(
    ("model", "exc", "status", "fragment"),
    [
        ("no-such-model", openai.NotFoundError, 404, "does not exist"),
        ("mock-embedding", openai.BadRequestError, 400, "serves the task 'embedding'"),
        ("fake-500", openai.InternalServerError, 502, "HTTP 500"),
        ("fake-refused", openai.InternalServerError, 502, "unreachable"),
        ("fake-garbage", openai.InternalServerError, 502, "not JSON"),
        ("fake-badshape", openai.InternalServerError, 502, "cannot read"),
        ("fake-400", openai.BadRequestError, 400, "max_tokens is too large"),
        ("fake-429", openai.RateLimitError, 429, "too many requests"),
    ],
)
async def test_errors_raise_the_right_sdk_class(
    gateway: Gateway, model: str, exc: type[openai.APIStatusError], status: int, fragment: str
) -> None:
    c = client(gateway)
    with pytest.raises(exc) as info:
        await c.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert fragment in info.value.message
    assert "Traceback" not in info.value.message and "secret internal" not in info.value.message
    assert info.value.request_id  # x-request-id is echoed


async def test_timeout_header_gives_504(gateway: Gateway, upstream: FakeOpenAI) -> None:
    c = client(gateway)
    with pytest.raises(openai.InternalServerError) as info:
        await c.chat.completions.create(
            model="fake-slow", messages=[{"role": "user", "content": "x"}],
            extra_headers={"OICM-Request-Timeout": "0.3"},
        )
    assert info.value.status_code == 504
    assert info.value.response.headers["x-should-retry"] == "false"
    # The upstream call was cut off at the deadline too.
    await asyncio.wait_for(upstream.disconnected.wait(), 2)


async def test_mid_stream_error_raises_api_error(gateway: Gateway) -> None:
    c = client(gateway)
    stream = await c.chat.completions.create(
        model="fake-miderror", messages=[{"role": "user", "content": "x"}], stream=True)
    got = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            got.append(chunk)
    assert "CUDA out of memory" in info.value.message
    assert got  # the chunks before the failure arrived
