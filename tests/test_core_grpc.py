"""The core through its generated stubs: streaming, deadlines, cancellation, keepalive, health,
reflection and error statuses, against the fake upstream on loopback."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from gateway_core.server import server_options
from http_edge.core_client import channel_options
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI


def chat(model: str, text: str = "hi") -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[pb.ChatMessage(role="user", content=text)])


async def test_chat_unary_and_stream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        call = stub.Chat(chat("fake-chat"), timeout=5, metadata=[("x-request-id", "req-123")])
        resp = await call
        assert resp.choices[0].message.content == REPLY
        assert resp.usage.total_tokens == 12 + len(REPLY.split(" "))
        assert upstream.requests[-1].headers["X-Request-Id"] == "req-123"
        trailing = dict(await call.trailing_metadata() or ())
        assert float(trailing["igw-upstream-seconds"]) > 0

        chunks = [c async for c in stub.ChatStream(chat("fake-chat"), timeout=5)]
        text = "".join(ch.delta.content for c in chunks for ch in c.choices)
        assert text == REPLY
        last = chunks[-1]
        assert last.HasField("usage") and last.usage.completion_tokens == len(REPLY.split(" "))
        assert last.choices[0].finish_reason == "stop"
        assert not any(c.HasField("usage") for c in chunks[:-1])


async def test_completion_stream_estimates_usage_when_upstream_silent(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        chunks = [c async for c in stub.CompleteStream(
            pb.CompletionRequest(model="fake-nousage", prompt="Once upon a time"), timeout=5)]
        assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY
        assert chunks[-1].usage.estimated
        assert chunks[-1].usage.completion_tokens == len(REPLY.split(" "))
        assert chunks[-1].usage.prompt_tokens == 4


@pytest.mark.parametrize(
    ("model", "code", "reason", "fragment"),
    [
        ("nope", grpc.StatusCode.NOT_FOUND, "model_not_found", "does not exist"),
        ("mock-embedding", grpc.StatusCode.INVALID_ARGUMENT, "task_mismatch", "'embedding'"),
        ("fake-500", grpc.StatusCode.UNAVAILABLE, "upstream_error", "HTTP 500"),
        ("fake-refused", grpc.StatusCode.UNAVAILABLE, "upstream_error", "unreachable"),
        ("fake-garbage", grpc.StatusCode.UNAVAILABLE, "upstream_error", "not JSON"),
    ],
)
async def test_error_statuses(gateway: Gateway, model: str, code: grpc.StatusCode, reason: str,
                              fragment: str) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(chat(model), timeout=5)
        assert info.value.code() == code
        assert fragment in (info.value.details() or "")
        assert "Traceback" not in (info.value.details() or "")
        assert dict(info.value.trailing_metadata() or ())["igw-reason"] == reason


async def test_caller_deadline_reaches_the_upstream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(chat("fake-slow"), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.5
        await asyncio.wait_for(upstream.disconnected.wait(), 2)


async def test_model_timeout_applies_without_caller_deadline(
    upstream: FakeOpenAI, gateway_factory: GatewayFactory
) -> None:
    data = base_config(upstream.base_url)
    for m in data["models"]:
        if m["id"] == "fake-slow":
            m["timeout_seconds"] = 0.3
    gw = await gateway_factory(data)
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await pb_grpc.InferenceStub(ch).Chat(chat("fake-slow"))
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert dict(info.value.trailing_metadata() or ())["igw-reason"] == "upstream_timeout"
        assert time.monotonic() - started < 1.5


async def test_cancelled_stream_closes_the_upstream(gateway: Gateway, upstream: FakeOpenAI) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-endless"), timeout=10)
        seen = 0
        async for _ in call:
            seen += 1
            if seen == 3:
                break
        call.cancel()
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        assert upstream.streams_finished == 0


async def test_long_unary_call_survives_frequent_keepalive_pings(
    upstream: FakeOpenAI, gateway_factory: GatewayFactory
) -> None:
    """A call lasting seconds with a ping every 100 ms is not dropped (default gRPC servers answer
    such pings with GOAWAY too_many_pings after two of them)."""
    upstream.slow_seconds = 2.0
    gw = await gateway_factory(base_config(upstream.base_url,
                                           timeouts={"keepalive_seconds": 0.1}))
    opts = channel_options(gw.config)
    assert ("grpc.keepalive_time_ms", 100) in opts
    async with grpc.aio.insecure_channel(gw.grpc_target, options=opts) as ch:
        resp = await pb_grpc.InferenceStub(ch).Chat(chat("fake-slow"), timeout=10)
        assert resp.choices[0].message.content == REPLY
    # And through the edge, whose channel uses the same options.
    async with aiohttp.ClientSession() as s, s.post(f"{gw.http}/v1/chat/completions", json={
        "model": "fake-slow", "messages": [{"role": "user", "content": "x"}]}) as r:
        assert r.status == 200, await r.text()


def test_server_options_tolerate_pings() -> None:
    from gateway_common.config import parse_config

    opts = dict(server_options(parse_config({"timeouts": {"keepalive_seconds": 0.1}})))
    assert opts["grpc.http2.max_ping_strikes"] == 0
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] <= 100


async def test_health_check_and_watch(gateway: Gateway) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "inference_gateway.v1.Inference", "inference_gateway.v1.Models"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=2)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=2)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def _reflect(target: str) -> tuple[list[str], Any]:
    with grpc.insecure_channel(target) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = list(db.get_services())
        file_desc = db.FindFileContainingSymbol("inference_gateway.v1.Inference")
        return services, file_desc


async def test_reflection_v1alpha_with_the_pip_client(gateway: Gateway) -> None:
    services, file_desc = await asyncio.to_thread(_reflect, gateway.grpc_target)
    assert "inference_gateway.v1.Inference" in services
    assert "inference_gateway.v1.Models" in services
    assert "grpc.health.v1.Health" in services
    assert file_desc.name == "inference_gateway/v1/inference.proto"
    assert any(s.name == "Inference" for s in file_desc.service)


async def test_reflection_v1(gateway: Gateway) -> None:
    """grpcurl asks v1 first: the same messages under grpc.reflection.v1."""
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        method = ch.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = method(timeout=2)
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        resp = await call.read()
        await call.done_writing()
        names = [s.name for s in resp.list_services_response.service]  # type: ignore[attr-defined]
        assert "inference_gateway.v1.Inference" in names
