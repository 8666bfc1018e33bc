"""The traffic rules through the generated gRPC stubs, as internal services call the core: stage
timeouts, broken answers, no healthy endpoint, a busy model, mid-stream failures, resumed
streams and unary answers assembled from streams, with their status codes and trailers."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import GatewayFactory, closed_port
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.traffic.conftest import Replicas, config, model

REQUEST = pb.ChatRequest(model="m", messages=[pb.ChatMessage(role="user", content="hi")])


def _stub(channel: grpc.aio.Channel) -> pb_grpc.InferenceAsyncStub:
    return pb_grpc.InferenceStub(channel)


@pytest.mark.parametrize(("fault", "settings", "code", "fragment"), [
    ("slow_first_token", {"timeouts": {"first_token": 0.3}}, grpc.StatusCode.DEADLINE_EXCEEDED,
     "timeouts.first_token"),
    ("stall", {"timeouts": {"idle": 0.3}}, grpc.StatusCode.DEADLINE_EXCEEDED, "timeouts.idle"),
    ("garbage", {}, grpc.StatusCode.UNAVAILABLE, "event stream"),
    ("empty", {}, grpc.StatusCode.UNAVAILABLE, "without any content"),
    ("400", {}, grpc.StatusCode.INVALID_ARGUMENT, ""),
])
async def test_a_failed_unary_call_has_the_right_status_and_says_not_to_retry(
        replicas: Replicas, gateway_factory: GatewayFactory, fault: str,
        settings: dict[str, object], code: grpc.StatusCode, fragment: str) -> None:
    (a,) = await replicas(fault, delay=5.0)
    gw = await gateway_factory(config(model("m", a.base_url, **settings)))
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        call = _stub(channel).Chat(REQUEST, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
    assert info.value.code() == code, info.value.details()
    assert fragment in (info.value.details() or "")
    assert "127.0.0.1" not in (info.value.details() or "")  # the model, never the address
    trailers = dict(info.value.trailing_metadata() or ())
    assert trailers["x-gateway-model"] == "m" and trailers["x-gateway-attempts"] == "1"


async def test_no_healthy_endpoint_is_unavailable_at_once_with_retry_after(
        gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(config(model(
        "m", f"http://127.0.0.1:{closed_port()}/v1",
        health={"consecutive_failures": 1, "ejection_seconds": 30})))
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        stub = _stub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Chat(REQUEST, timeout=10)  # ejects the only endpoint
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(REQUEST, timeout=10)
    assert time.monotonic() - started < 0.5
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(info.value.trailing_metadata() or ())
    assert trailers.get("igw-reason") == "no_healthy_upstream"
    assert int(trailers["retry-after"]) >= 1


async def test_a_busy_model_is_resource_exhausted(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("slow_headers", delay=2.0)
    gw = await gateway_factory(config(model("m", a.base_url, max_concurrency=1,
                                            queue_timeout=0.2)))
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        stub = _stub(channel)
        first = asyncio.ensure_future(stub.Chat(REQUEST, timeout=10))
        for _ in range(500):  # polled: the first call holds the only slot
            if a.in_flight:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(REQUEST, timeout=10)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(info.value.trailing_metadata() or ()).get("igw-reason") == "model_busy"
        assert (await first).choices[0].message.content == "a says hello world"


async def test_a_stream_cut_after_tokens_ends_with_an_error_status(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("reset")
    gw = await gateway_factory(config(model("m", a.base_url)))
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        stream = _stub(channel).ChatStream(REQUEST, timeout=10)
        got: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for chunk in stream:
                got.extend(c.delta.content for c in chunk.choices)
    assert "".join(got) == "a says"
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_resumed_stream_reaches_a_grpc_caller_whole(
        gateway_factory: GatewayFactory) -> None:
    text = "one two three four five six"
    a = await FaultyUpstream("a", "reset", text=text).start()
    b = await FaultyUpstream("b", "ok", text=text).start()
    try:
        gw = await gateway_factory(config(model("m", a.base_url, b.base_url,
                                                resume_streams=True)))
        async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
            stream = _stub(channel).ChatStream(REQUEST, timeout=10)
            chunks = [c async for c in stream]
            trailers = dict(await stream.trailing_metadata() or ())
    finally:
        await a.stop()
        await b.stop()
    assert "".join(c.delta.content for ch in chunks for c in ch.choices) == text
    assert len({ch.id for ch in chunks}) == 1
    assert chunks[-1].usage.estimated and chunks[-1].usage.completion_tokens > 0
    assert trailers["x-gateway-attempts"] == "2"


async def test_a_unary_grpc_call_is_assembled_from_the_upstream_stream(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("reset_before", "ok")
    gw = await gateway_factory(config(model("m", a.base_url, b.base_url)))
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        call = _stub(channel).Chat(REQUEST, timeout=10)
        resp = await call
        trailers = dict(await call.trailing_metadata() or ())
    assert resp.choices[0].message.content == "b says hello world"
    assert resp.choices[0].finish_reason == "stop"
    assert trailers["x-gateway-attempts"] == "2"
    assert a.requests[-1]["stream"] is True and b.requests[-1]["stream"] is True
