"""A whole tool-calling loop through the gateway, with the mock model (no upstream): the official
SDK (unary and streamed, single and parallel calls), gRPC stubs, the mlflow route and TGI's
Messages API through huggingface_hub."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import grpc
import huggingface_hub
import openai
import orjson
import pytest

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory

WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.", "strict": True,
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string"},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
TIME: Any = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {
        "zone": {"type": "string"}, "days": {"type": "integer"}}}}}


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory({"auth": {"enabled": False}, "tgi_model": "mock-chat",
                                  "models": [{"id": "mock-chat", "task": "chat",
                                              "provider": "mock", "aliases": ["chat"]}]})


def sdk(gw: Gateway) -> Any:
    """The SDK's client, typed loosely: the tests pass tools as plain JSON."""
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="unused", max_retries=0)


async def test_sdk_tool_call_then_tool_result(gw: Gateway) -> None:
    client = sdk(gw)
    messages: list[Any] = [{"role": "user", "content": "Use get_weather for Paris"}]
    first = await client.chat.completions.create(model="mock-chat", messages=messages,
                                                 tools=[WEATHER, TIME], tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "mock", "unit": "celsius"}
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "18 degrees, sunny"}]
    second = await client.chat.completions.create(model="mock-chat", messages=messages,
                                                  tools=[WEATHER, TIME])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content and not second.choices[0].message.tool_calls


async def test_sdk_streamed_parallel_calls_join_by_index(gw: Gateway) -> None:
    client = sdk(gw)
    stream = await client.chat.completions.create(
        model="mock-chat", stream=True, tools=[WEATHER, TIME],
        messages=[{"role": "user", "content": "call get_weather and get_time please"}])
    calls: dict[int, dict[str, str]] = {}
    finish, fragments = None, 0
    async for chunk in stream:
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for frag in c.delta.tool_calls or ():
                fragments += 1
                entry = calls.setdefault(frag.index, {"id": "", "name": "", "arguments": ""})
                if frag.id:
                    entry["id"] = frag.id
                if frag.function and frag.function.name:
                    entry["name"] = frag.function.name
                if frag.function and frag.function.arguments:
                    entry["arguments"] += frag.function.arguments
    assert finish == "tool_calls" and fragments > 2
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[1]["arguments"]) == {"zone": "mock", "days": 1}
    assert all(c["id"].startswith("call_") for c in calls.values())


async def test_tool_choice_none_and_named_and_serial(gw: Gateway) -> None:
    client = sdk(gw)
    ask = [{"role": "user", "content": "get_weather and get_time"}]
    none = await client.chat.completions.create(model="mock-chat", messages=ask,
                                                tools=[WEATHER, TIME], tool_choice="none")
    assert none.choices[0].message.tool_calls is None
    named = await client.chat.completions.create(
        model="mock-chat", messages=[{"role": "user", "content": "hello"}],
        tools=[WEATHER, TIME], tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in named.choices[0].message.tool_calls or []] == ["get_time"]
    serial = await client.chat.completions.create(model="mock-chat", messages=ask,
                                                  tools=[WEATHER, TIME], parallel_tool_calls=False)
    assert len(serial.choices[0].message.tool_calls or []) == 1


async def test_logprobs_from_the_mock(gw: Gateway) -> None:
    client = sdk(gw)
    resp = await client.chat.completions.create(
        model="mock-chat", messages=[{"role": "user", "content": "hi"}], logprobs=True,
        top_logprobs=2)
    content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
    assert content and "".join(t.token for t in content) == resp.choices[0].message.content
    assert len(content[0].top_logprobs) == 2 and content[0].bytes == list(content[0].token.encode())


async def test_grpc_callers_run_a_tool_loop(gw: Gateway) -> None:
    tool = pb.Tool(type="function", function=pb.FunctionDefinition(name="get_weather"))
    tool.function.parameters.update(WEATHER["function"]["parameters"])
    req = pb.ChatRequest(model="mock-chat", tools=[tool], messages=[
        pb.ChatMessage(role="user", content="get_weather in Oslo")])
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        resp = await stub.Chat(req, timeout=10)
        [call] = resp.choices[0].message.tool_calls
        assert resp.choices[0].finish_reason == "tool_calls"
        assert not resp.choices[0].message.HasField("content")
        assert json.loads(call.function.arguments)["unit"] == "celsius"
        fragments = [t for chunk in [c async for c in stub.ChatStream(req, timeout=10)]
                     for ch_ in chunk.choices for t in ch_.delta.tool_calls]
        assert fragments[0].id == call.id and fragments[0].function.name == "get_weather"
        assert "".join(f.function.arguments for f in fragments) == call.function.arguments
        req.messages.extend([resp.choices[0].message, pb.ChatMessage(
            role="tool", tool_call_id=call.id, content="-3 degrees")])
        answer = await stub.Chat(req, timeout=10)
        assert answer.choices[0].finish_reason == "stop" and answer.choices[0].message.content


async def test_mlflow_chat_passes_tools(gw: Gateway) -> None:
    body = {"messages": [{"role": "user", "content": "get_weather"}], "tools": [WEATHER]}
    async with aiohttp.ClientSession() as s, s.post(f"{gw.http}/gateway/chat/invocations",
                                                    json=body) as resp:
        assert resp.status == 200
        data = await resp.json()
    call = data["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert data["choices"][0]["finish_reason"] == "tool_calls"


async def test_tgi_messages_api_with_huggingface_hub(gw: Gateway) -> None:
    def run() -> Any:
        client: Any = huggingface_hub.InferenceClient(base_url=gw.http)
        return client.chat_completion(
            messages=[{"role": "user", "content": "get_weather now"}], tools=[WEATHER],
            tool_choice="auto", max_tokens=20)

    out = await asyncio.to_thread(run)
    call = out.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments)["city"] == "mock"


async def test_unified_tool_use_round_trip(gw: Gateway) -> None:
    body: dict[str, Any] = {"model": "mock-chat", "tools": [WEATHER], "messages": [
        {"role": "user", "content": "get_weather in Rome"}]}
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gw.http}/v1/inference/chat", json=body) as resp:
            assert resp.status == 200
            data = await resp.json()
        assert data["stop_reason"] == "tool_use"
        [use] = [p for p in data["message"]["content"] if p["type"] == "tool_use"]
        assert use["name"] == "get_weather" and use["input"] == {"city": "mock", "unit": "celsius"}
        body["messages"] += [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                          "content": "21 degrees"}]}]
        async with s.post(f"{gw.http}/v1/inference/chat", json=body) as resp:
            assert resp.status == 200
            final = await resp.json()
        assert final["stop_reason"] == "end_turn"
        assert final["message"]["content"][0]["type"] == "text"
        body["messages"] = body["messages"][:1]
        body["parameters"] = {"stream": True}
        async with s.post(f"{gw.http}/v1/inference/chat", json=body) as resp:
            frames = [orjson.loads(line[6:]) async for line in resp.content
                      if line.startswith(b"data: {")]
    fragments = [f["tool_use"] for f in frames if "tool_use" in f]
    assert fragments[0]["name"] == "get_weather" and fragments[0]["id"] == use["id"]
    assert orjson.loads("".join(f["partial_json"] for f in fragments)) == use["input"]
