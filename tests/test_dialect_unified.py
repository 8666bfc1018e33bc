"""The unified dialect (seed 003) over raw HTTP: ``POST /v1/inference/chat``."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

PATH = "/v1/inference/chat"
HEADERS = {"x-api-key": "Your_UsageGuard_API_key", "x-connection-id": "conn-1"}


@pytest.fixture
async def gw(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(base_config(upstream.base_url,
                                             limits={"max_prompt_chars": 1000}))


async def post(gw: Gateway, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.http + PATH, json=body,
                                                     headers=HEADERS) as r:
        return r.status, await r.json()


async def post_stream(gw: Gateway, body: Any) -> tuple[int, str, list[Any]]:
    """The status, content type and the ``data:`` payloads (``[DONE]`` kept as a string)."""
    async with aiohttp.ClientSession() as s, s.post(gw.http + PATH, json=body,
                                                     headers=HEADERS) as r:
        raw = (await r.read()).decode()
        events: list[Any] = []
        for block in raw.split("\n\n"):
            if block.startswith("data: "):
                data = block[len("data: "):]
                events.append(data if data == "[DONE]" else orjson.loads(data))
        return r.status, r.headers["Content-Type"], events


def nested(depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(depth):
        out = {"properties": out}
    return out


def seed_body(model: str = "fake-chat", **parameters: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content":
                      "Translate the following English text to French: 'Hello, how are you?'"}],
        "parameters": {"maxTokens": 60, "temperature": 0.7, **parameters},
    }


async def test_seed_request_and_response_schema(gw: Gateway, upstream: FakeOpenAI) -> None:
    status, body = await post(gw, seed_body())
    assert status == 200
    assert list(body) == ["schema", "message", "model", "usage", "stop_reason", "created"]
    assert body["schema"] == "inference.response.v1"
    assert body["message"] == {"role": "assistant", "content": [{"type": "text", "text": REPLY}]}
    assert body["model"] == "fake-chat" and body["stop_reason"] == "end_turn"
    words = len(REPLY.split(" "))
    assert body["usage"] == {"inputTokens": 12, "outputTokens": words, "totalTokens": 12 + words}
    assert isinstance(body["created"], int)
    sent = upstream.requests[-1].body
    assert sent["max_tokens"] == 60 and sent["temperature"] == 0.7 and sent["top_p"] == 0.9


async def test_defaults_when_parameters_are_left_out(gw: Gateway, upstream: FakeOpenAI) -> None:
    status, _ = await post(gw, {"model": "fake-chat",
                                "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    sent = upstream.requests[-1].body
    assert (sent["temperature"], sent["max_tokens"], sent["top_p"]) == (0.7, 256, 0.9)


async def test_snake_spellings_parts_and_max_tokens_stop_reason(
        gw: Gateway, upstream: FakeOpenAI) -> None:
    status, body = await post(gw, {
        "model": "fake-chat",
        "messages": [{"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                     {"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "parameters": {"max_tokens": 3, "top_p": 0.5, "frequency_penalty": 0.5,
                       "presencePenalty": -0.5, "temperature": 0},
    })
    assert status == 200, body
    assert body["stop_reason"] == "max_tokens"
    assert body["message"]["content"][0]["text"] == "Deep learning is"
    sent = upstream.requests[-1].body
    assert sent["messages"][1] == {"role": "user", "content": [{"type": "text", "text": "Hello"}]}
    assert (sent["max_tokens"], sent["top_p"], sent["temperature"]) == (3, 0.5, 0.0)
    assert sent["frequency_penalty"] == 0.5 and sent["presence_penalty"] == -0.5


async def test_json_output_schema_stop_and_end_user(gw: Gateway, upstream: FakeOpenAI) -> None:
    status, _ = await post(gw, seed_body(json_output=True, stop="\n", end_user_id="user-7"))
    assert status == 200
    sent = upstream.requests[-1].body
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["stop"] == ["\n"] and sent["user"] == "user-7"
    schema = {"type": "object", "properties": {"fr": {"type": "string"}}}
    status, _ = await post(gw, seed_body(jsonSchema=schema))
    assert status == 200
    assert upstream.requests[-1].body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    status, _ = await post(gw, seed_body(json_schema={"name": "fr", "schema": schema}))
    assert upstream.requests[-1].body["response_format"]["json_schema"] == {
        "name": "fr", "schema": schema}


async def test_stream_chunks_usage_chunk_then_done(gw: Gateway) -> None:
    status, ctype, events = await post_stream(gw, seed_body(stream=True))
    assert status == 200 and ctype.startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    usage = events[-2]
    assert list(usage) == ["schema", "usage", "created", "model_id", "content"]
    assert usage["schema"] == "inference.response.usage.chunk.v1" and usage["content"] == ""
    assert usage["usage"]["outputTokens"] == len(REPLY.split(" "))
    chunks = events[:-2]
    assert all(list(c) == ["schema", "created", "model_id", "content"] for c in chunks)
    assert {c["schema"] for c in chunks} == {"inference.response.chunk.v1"}
    assert {c["model_id"] for c in chunks} == {"fake-chat"}
    assert "".join(c["content"] for c in chunks) == REPLY


async def test_stream_at_top_level_and_without_usage(gw: Gateway) -> None:
    body = {**seed_body("mock-chat", include_usage=False), "stream": True}
    status, _, events = await post_stream(gw, body)
    assert status == 200 and events[-1] == "[DONE]"
    assert {e["schema"] for e in events[:-1]} == {"inference.response.chunk.v1"}
    assert "".join(e["content"] for e in events[:-1]).startswith("This is a mock reply to:")


async def test_mid_stream_failure_ends_with_an_error_event(gw: Gateway) -> None:
    status, _, events = await post_stream(gw, seed_body("fake-miderror", stream=True))
    assert status == 200
    assert events[-1] == "[DONE]"
    err = events[-2]
    assert err["schema"] == "inference.error.v1"
    assert "CUDA out of memory" in err["error"]["message"] and err["request_id"]
    assert events[0]["schema"] == "inference.response.chunk.v1"


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404,
     "the model 'nope' does not exist"),
    ({"model": "mock-embedding", "messages": [{"role": "user", "content": "x"}]}, 400,
     "serves the task 'embedding'"),
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "'model' is required"),
    ({"model": "mock-chat", "messages": []}, 400, "at least one message"),
    ({**seed_body("mock-chat"), "parameters": [60]}, 400, "'parameters' must be an object"),
    (seed_body("mock-chat", maxTokens="60"), 400, "'parameters.maxTokens' must be an integer"),
    (seed_body("mock-chat", max_tokens=10), 400,
     "'parameters.max_tokens' and 'parameters.maxTokens' disagree"),
    (seed_body("mock-chat", topP=3), 400, "'parameters.topP' must be a number between 0 and 1"),
    (seed_body("mock-chat", json_schema="{}"), 400, "'parameters.json_schema' must be an object"),
    (seed_body("mock-chat", stream="yes"), 400, "'parameters.stream' must be a boolean"),
    ({"model": "mock-chat", "messages": [{"role": "tool", "content": "x"}]}, 400,
     "'messages[0].role' must be one of assistant, system, user"),
    ({"model": "mock-chat", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, 400,
     "only parts of type 'text'"),
    ({**seed_body("mock-chat"), "filters": {"documents_classification": "secret"}}, 400,
     "'filters.documents_classification' must be one of"),
    ({"model": "mock-chat", "messages": [{"role": "user", "content": "x" * 1001}]}, 413,
     "the prompt is 1001 characters long; the limit is 1000"),
    (seed_body("mock-chat", maxTokens=10**30), 400,
     "'parameters.maxTokens' must be an integer between 1 and 4294967295"),
    (seed_body("mock-chat", jsonSchema=nested(300)), 400,
     "'parameters.jsonSchema' is nested more than"),
])
async def test_bad_inputs(gw: Gateway, body: Any, status: int, fragment: str) -> None:
    got, answer = await post(gw, body)
    assert got == status
    assert answer["schema"] == "inference.error.v1"
    assert fragment in answer["error"]["message"]
    assert answer["request_id"]


async def test_stream_that_fails_at_once_is_a_plain_error(gw: Gateway) -> None:
    status, body = await post(gw, seed_body("nope", stream=True))
    assert status == 404 and body["schema"] == "inference.error.v1"


async def test_filters_and_bearer_are_accepted(gw: Gateway) -> None:
    body = {**seed_body("mock-chat"), "filters": {"documents_classification": "internal",
                                                  "documents_tags": ["a", "b"]}}
    async with aiohttp.ClientSession() as s, s.post(
            gw.http + PATH, json=body, headers={"Authorization": "Bearer t"}) as r:
        assert r.status == 200
        assert (await r.json())["schema"] == "inference.response.v1"
