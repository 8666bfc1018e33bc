"""Pools of replicas (SPEC §10): failover, retries and their limits, passive health with
ejection and probing, fallbacks, and what every answer says of what served it; through the edge
over both core transports and through the gRPC stubs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from prometheus_client import REGISTRY

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory, closed_port
from tests.traffic.conftest import Replicas, chat, config, model


def _text(body: bytes) -> str:
    return str(orjson.loads(body)["choices"][0]["message"]["content"])


def _stream_text(body: bytes) -> str:
    out = []
    for frame in body.split(b"\n\n"):
        if frame.startswith(b"data: {"):
            data = orjson.loads(frame[6:])
            for c in data.get("choices") or ():
                out.append(c["delta"].get("content") or "")
    return "".join(out)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refused_endpoint_fails_over_to_the_next(
        replicas: Replicas, gateway_factory: GatewayFactory, stream: bool) -> None:
    (b,) = await replicas("ok")
    gw = await gateway_factory(config(model("m", f"http://127.0.0.1:{closed_port()}/v1",
                                            b.base_url)))
    status, headers, body = await chat(gw, "m", stream=stream)
    assert status == 200, body
    assert headers["x-gateway-model"] == "m" and headers["x-gateway-attempts"] == "2"
    assert (_stream_text(body) if stream else _text(body)) == "a says hello world"


@pytest.mark.parametrize(("fault", "stream"), [
    *((f, st) for f in ("502", "503", "504", "429", "garbage", "slow_headers")
      for st in (False, True)),
    # Faults of a stream's body, before its first token.
    *((f, True) for f in ("reset_before", "empty", "not_sse", "no_choices", "slow_first_token")),
])
async def test_a_failing_endpoint_is_retried_on_another(
        replicas: Replicas, gateway_factory: GatewayFactory, fault: str, stream: bool) -> None:
    bad, good = await replicas(fault, "ok", delay=5.0)
    # (stage timeouts of 1 s: a busy machine may take a few hundred ms to answer at all)
    gw = await gateway_factory(config(model("m", bad.base_url, good.base_url,
                                            timeouts={"headers": 1.0, "first_token": 1.0})))
    started = time.monotonic()
    status, headers, body = await chat(gw, "m", stream=stream)
    assert status == 200, body
    assert headers["x-gateway-attempts"] == "2"
    assert (len(bad.requests), len(good.requests)) == (1, 1)
    assert (_stream_text(body) if stream else _text(body)) == "b says hello world"
    assert time.monotonic() - started < 3


async def test_a_plain_500_is_not_retried(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    bad, good = await replicas("500", "ok")
    gw = await gateway_factory(config(model("m", bad.base_url, good.base_url)))
    status, headers, _ = await chat(gw, "m")
    assert status == 502 and headers["x-gateway-attempts"] == "1" and not good.requests


async def test_a_client_error_is_never_retried(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    bad, good = await replicas("400", "ok")
    gw = await gateway_factory(config(model("m", bad.base_url, good.base_url)))
    status, headers, _ = await chat(gw, "m")
    assert status == 400
    assert headers["x-gateway-attempts"] == "1" and headers["x-should-retry"] == "false"
    assert not good.requests


async def test_after_its_retries_the_gateway_tells_sdks_not_to_retry(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("503", "503")
    gw = await gateway_factory(config(model("m", a.base_url, b.base_url)))
    status, headers, body = await chat(gw, "m")
    assert status == 502
    assert headers["x-gateway-attempts"] == "2" and headers["x-should-retry"] == "false"
    message = orjson.loads(body)["error"]["message"]
    assert "127.0.0.1" not in message and str(a.port) not in message


async def test_a_429_is_waited_out_when_its_retry_after_fits(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("ok")
    a.queue.append("429")
    gw = await gateway_factory(config(model("m", a.base_url)))
    started = time.monotonic()
    status, headers, _ = await chat(gw, "m")
    assert status == 200 and headers["x-gateway-attempts"] == "2"
    assert a.requests[1]["_at"] - a.requests[0]["_at"] >= 0.95  # its Retry-After: 1
    assert time.monotonic() - started < 3


async def test_the_retry_budget_stops_retries_on_a_failing_pool(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("503", "503")
    gw = await gateway_factory(config(model(
        "m", a.base_url, b.base_url, retries={"budget_percent": 0, "min_retries": 2},
        health={"consecutive_failures": 1000})))
    attempts = []
    for _ in range(5):
        status, headers, _ = await chat(gw, "m")
        assert status == 502
        attempts.append(headers["x-gateway-attempts"])
    assert attempts == ["2", "2", "1", "1", "1"]


ADMIN = "igw_admin_secret_for_the_traffic_tests_0123456789"


async def test_an_ejected_pool_answers_503_at_once_then_a_probe_brings_it_back(
        replicas: Replicas, gateway_factory: GatewayFactory, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGW_TEST_TRAFFIC_ADMIN", ADMIN)
    a, b = await replicas("503", "503")
    gw = await gateway_factory({
        "auth": {"enabled": True, "admin_token_env": "IGW_TEST_TRAFFIC_ADMIN"},
        "storage": {"data_dir": str(tmp_path)},
        "models": [model("m", a.base_url, b.base_url, timeout_seconds=30,
                         health={"consecutive_failures": 1, "ejection_seconds": 0.5})]})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with aiohttp.ClientSession(headers=admin) as s:
        async with s.post(f"{gw.http}/admin/tokens", json={"name": "t", "models": ["m"]}) as r:
            token = {"Authorization": f"Bearer {(await r.json())['secret']}"}

        async def listed() -> dict[str, Any]:
            async with s.get(f"{gw.http}/admin/models") as resp:
                found: dict[str, Any] = {m["id"]: m for m in (await resp.json())["data"]}["m"]
                return found

        status, _, _ = await chat(gw, "m", headers=token)
        assert status == 502
        started = time.monotonic()
        status, headers, body = await chat(gw, "m", headers=token)
        assert time.monotonic() - started < 0.2
        assert status == 503 and headers["Retry-After"] == "1", body
        assert orjson.loads(body)["error"]["code"] == "no_healthy_upstream"
        assert len(a.requests) + len(b.requests) == 2  # the refused request reached no one
        m = await listed()
        assert m["status"] == "unavailable"
        assert [u["state"] for u in m["upstreams"]] == ["ejected", "ejected"]
        assert [u["endpoint"] for u in m["upstreams"]] == [f"127.0.0.1:{a.port}",
                                                            f"127.0.0.1:{b.port}"]
        async with s.get(f"{gw.http}/metrics") as resp:
            metrics = await resp.text()
        assert f'gateway_upstream_up{{endpoint="127.0.0.1:{a.port}",model="m"}} 0.0' in metrics
        a.fault = b.fault = "ok"
        await asyncio.sleep(0.6)
        status, _, _ = await chat(gw, "m", headers=token)
        assert status == 200
        assert "up" in [u["state"] for u in (await listed())["upstreams"]]


async def test_a_fallback_serves_when_the_pool_is_exhausted(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("503", "ok")
    gw = await gateway_factory(config(model("m", a.base_url, fallbacks=["spare"]),
                                      model("spare", b.base_url)))
    before = _fallbacks()
    for stream in (False, True):
        status, headers, body = await chat(gw, "m", stream=stream)
        assert status == 200, body
        assert headers["x-gateway-model"] == "spare" and headers["x-gateway-attempts"] == "2"
    assert _fallbacks() == before + 2


def _fallbacks() -> float:
    return REGISTRY.get_sample_value("gateway_fallbacks_total",
                                     {"model": "m", "fallback": "spare"}) or 0.0


async def test_fallbacks_must_exist_and_serve_the_task(gateway_factory: GatewayFactory) -> None:
    from gateway_common.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match=r"models\[0\].fallbacks\[0\]: no model named"):
        parse_config(config(model("m", "http://x:1/v1", fallbacks=["nope"])))
    with pytest.raises(ConfigError, match="does not serve the task 'chat'"):
        parse_config(config(model("m", "http://x:1/v1", fallbacks=["e"]),
                            {"id": "e", "task": "embedding", "provider": "mock"}))


async def test_grpc_callers_get_the_same_failover_and_trailers(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    bad, good = await replicas("503", "ok")
    gw: Gateway = await gateway_factory(config(model("m", bad.base_url, good.base_url)))
    request = pb.ChatRequest(model="m", messages=[pb.ChatMessage(role="user", content="hi")])
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        call = stub.Chat(request, timeout=10)
        resp = await call
        trailing = dict(await call.trailing_metadata() or ())
        assert resp.choices[0].message.content == "b says hello world"
        assert trailing["x-gateway-model"] == "m" and trailing["x-gateway-attempts"] == "2"
        attempts = set()
        for _ in range(2):  # round robin: one of the two starts on the failing endpoint
            stream = stub.ChatStream(request, timeout=10)
            chunks = [c async for c in stream]
            assert "".join(c.choices[0].delta.content for c in chunks if c.choices) \
                == "b says hello world"
            attempts.add(dict(await stream.initial_metadata() or ())["x-gateway-attempts"])
        assert attempts == {"1", "2"}
