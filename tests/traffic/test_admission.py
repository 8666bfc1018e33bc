"""Admission control and balancing (SPEC §10): a model's concurrency cap with a bounded wait,
strict priority across classes and fairness across tokens, shedding, overload that leaves the
gateway answering; and how each balancer spreads requests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import Gateway, GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.traffic.conftest import Replicas, chat, config, model

ADMIN = "igw_admin_secret_for_the_admission_tests_0123456"


async def _in_flight(fake: FaultyUpstream, n: int) -> None:
    for _ in range(500):
        if fake.in_flight >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{fake.in_flight} requests in flight, not {n}")


async def _polled(fake: FaultyUpstream, n: int) -> None:
    """Wait until the gateway has read the fake's /metrics ``n`` times in all."""
    for _ in range(500):
        if fake.metrics_polls >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"/metrics read {fake.metrics_polls} times, not {n}")


def _asked(fake: FaultyUpstream) -> list[str]:
    return [r["messages"][0]["content"] for r in fake.requests]


async def test_overload_is_refused_at_once_and_the_gateway_keeps_answering(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("slow_headers", delay=3.0)
    gw = await gateway_factory(config(model("m", a.base_url, max_concurrency=4,
                                            queue_timeout=0.3, max_queued=20)))

    async def one() -> tuple[int, dict[str, str], bytes, float]:
        started = time.monotonic()
        status, headers, body = await chat(gw, "m")
        return status, headers, body, time.monotonic() - started

    tasks = [asyncio.create_task(one()) for _ in range(150)]
    await _in_flight(a, 4)
    async with aiohttp.ClientSession() as s:
        started = time.monotonic()
        async with s.get(f"{gw.http}/health") as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 0.2
    results = await asyncio.gather(*tasks)
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 429]
    assert len(ok) == 4 and len(ok) + len(busy) == 150
    assert a.peak == 4
    for _, headers, body, took in busy:
        assert orjson.loads(body)["error"]["code"] == "model_busy"
        assert headers["Retry-After"] == "1"
        # Refused within queue_timeout (0.3 s, plus what 150 clients, each with a connection
        # of its own, cost on 2 busy cores), never after the admitted work (3 s).
        assert took < 2.0


async def test_the_queue_serves_classes_in_strict_order(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("slow_headers", delay=0.3)
    gw = await gateway_factory(config(model("m", a.base_url, max_concurrency=1,
                                            queue_timeout=5)))
    first = asyncio.create_task(chat(gw, "m", content="first"))
    await _in_flight(a, 1)
    waiting = []
    for cls in ("sheddable", "standard", "critical"):
        waiting.append(asyncio.create_task(
            chat(gw, "m", content=cls, headers={"x-gateway-priority": cls})))
        await asyncio.sleep(0.02)
    results = await asyncio.gather(first, *waiting)
    assert [r[0] for r in results] == [200] * 4
    assert _asked(a) == ["first", "critical", "standard", "sheddable"]


async def test_a_full_queue_sheds_the_sheddable_first(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("slow_headers", delay=0.4)
    gw = await gateway_factory(config(model("m", a.base_url, max_concurrency=1,
                                            queue_timeout=5, max_queued=1)))
    first = asyncio.create_task(chat(gw, "m", content="first"))
    await _in_flight(a, 1)
    shed = asyncio.create_task(chat(gw, "m", content="s",
                                    headers={"x-gateway-priority": "sheddable"}))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    critical = asyncio.create_task(chat(gw, "m", content="c",
                                        headers={"x-gateway-priority": "critical"}))
    status, _, body = await shed
    assert status == 429 and time.monotonic() - started < 0.2
    assert orjson.loads(body)["error"]["code"] == "model_busy"
    assert (await critical)[0] == 200 and (await first)[0] == 200
    assert _asked(a) == ["first", "c"]


async def test_an_unknown_priority_is_a_400(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("ok")
    gw = await gateway_factory(config(model("m", a.base_url)))
    status, _, body = await chat(gw, "m", headers={"x-gateway-priority": "urgent"})
    assert status == 400 and b"critical, standard, sheddable" in body


async def test_tokens_take_turns_within_a_class(
        replicas: Replicas, gateway_factory: GatewayFactory, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGW_TEST_ADMISSION_ADMIN", ADMIN)
    (a,) = await replicas("slow_headers", delay=0.15)
    gw: Gateway = await gateway_factory({
        "auth": {"enabled": True, "admin_token_env": "IGW_TEST_ADMISSION_ADMIN"},
        "storage": {"data_dir": str(tmp_path)},
        "models": [model("m", a.base_url, max_concurrency=1, queue_timeout=5)]})
    secrets = []
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as s:
        for name in ("busy", "quiet"):
            async with s.post(f"{gw.http}/admin/tokens", json={"name": name, "models": ["m"]}
                              ) as r:
                secrets.append({"Authorization": f"Bearer {(await r.json())['secret']}"})
    busy, quiet = secrets
    first = asyncio.create_task(chat(gw, "m", content="busy0", headers=busy))
    await _in_flight(a, 1)
    tasks = [first]
    for i in range(1, 4):
        tasks.append(asyncio.create_task(chat(gw, "m", content=f"busy{i}", headers=busy)))
        await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(chat(gw, "m", content="quiet", headers=quiet)))
    assert [r[0] for r in await asyncio.gather(*tasks)] == [200] * 5
    # The quiet token's one request goes right after the busy one's next, not after all of them.
    assert _asked(a) == ["busy0", "busy1", "quiet", "busy2", "busy3"]


async def test_least_loaded_follows_the_engines_own_metrics(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("ok", "ok")
    a.metrics_text = "# TYPE vllm:num_requests_waiting gauge\n" \
        'vllm:num_requests_waiting{model_name="x"} 12\nvllm:kv_cache_usage_perc 0.9\n'
    b.metrics_text = 'vllm:num_requests_waiting{model_name="x"} 0\n' \
        'vllm:num_requests_running{model_name="x"} 3\n'
    gw = await gateway_factory(config(model("m", a.base_url, b.base_url, balance="least_loaded",
                                            load_poll_seconds=0.05)))
    await _polled(a, 1)
    await _polled(b, 1)
    for _ in range(10):
        assert (await chat(gw, "m"))[0] == 200
    assert len(a.requests) == 0 and len(b.requests) == 10
    a.metrics_text = "vllm:num_requests_waiting 0\n"
    b.metrics_text = "tgi_queue_size 40\n"
    await _polled(a, a.metrics_polls + 2)
    for _ in range(5):
        assert (await chat(gw, "m"))[0] == 200
    assert len(a.requests) == 5


async def test_prefix_affinity_keeps_a_prefix_on_one_endpoint(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    fakes = await replicas("ok", "ok", "ok")
    gw = await gateway_factory(config(model("m", *(f.base_url for f in fakes),
                                            balance="prefix_affinity")))
    system = "You are a careful assistant. " * 12
    for i in range(8):
        assert (await chat(gw, "m", content=f"{system} question {i}"))[0] == 200
    assert sorted(len(f.requests) for f in fakes) == [0, 0, 8]
    for i in range(30):
        assert (await chat(gw, "m", content=f"{i} another conversation"))[0] == 200
    assert sum(1 for f in fakes if f.requests) >= 2


async def test_round_robin_follows_the_weights(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("ok", "ok")
    gw = await gateway_factory(config({
        "id": "m", "task": "chat", "provider": "openai", "balance": "round_robin",
        "upstreams": [{"url": a.base_url, "weight": 3}, {"url": b.base_url}]}))
    for _ in range(8):
        assert (await chat(gw, "m"))[0] == 200
    assert (len(a.requests), len(b.requests)) == (6, 2)


async def test_least_outstanding_spreads_concurrent_requests(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    a, b = await replicas("slow_headers", "slow_headers", delay=0.2)
    gw = await gateway_factory(config({"id": "m", "task": "chat", "provider": "openai",
                                       "upstreams": [{"url": a.base_url}, {"url": b.base_url}]}))
    results = await asyncio.gather(*(chat(gw, "m") for _ in range(6)))
    assert [r[0] for r in results] == [200] * 6
    assert (a.peak, b.peak) == (3, 3)
