"""Limits counted in Redis (``limits.backend: redis``), against the Redis of this machine and CI
(127.0.0.1:6379; skipped with a message where none answers): the same answers as in process, and
what happens when Redis cannot be reached (fail_open, fail_closed)."""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.conftest import GatewayFactory, closed_port
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.limits.test_limits import CHAT, limited, post

REDIS = "redis://127.0.0.1:6379/0"


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_up(), reason="no Redis on 127.0.0.1:6379 (CI and "
                                 "the development machine have one; start redis-server to run)")


def config(url: str, **limits: Any) -> dict[str, Any]:
    return {"auth": {"enabled": False},
            "limits": {"backend": "redis", "redis_url_env": "IGW_TEST_REDIS_URL",
                       "redis_prefix": f"igw-test-{secrets.token_hex(4)}:", **limits},
            "models": [limited("m", url, rpm=3, tpm=100000, daily_tokens=1_000_000)]}


@pytest.fixture
async def upstream() -> Any:
    fake = await FaultyUpstream("a", "ok").start()
    yield fake
    await fake.stop()


@needs_redis
async def test_redis_counts_as_one_process_does(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGW_TEST_REDIS_URL", REDIS)
    cfg = config(upstream.base_url)
    # Two gateways on one Redis, under one prefix: one limit.
    first = await gateway_factory(cfg)
    second = await gateway_factory(cfg)
    statuses = []
    remaining = []
    for gw in (first, second, first, second):
        status, headers, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
        statuses.append(status)
        remaining.append(headers.get("x-ratelimit-remaining-requests"))
    assert statuses == [200, 200, 200, 429]
    assert remaining[:3] == ["2", "1", "0"]


@needs_redis
async def test_concurrency_in_redis(gateway_factory: GatewayFactory,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGW_TEST_REDIS_URL", REDIS)
    slow = await FaultyUpstream("a", "slow_headers", delay=1.0).start()
    try:
        cfg = config(slow.base_url)
        cfg["models"] = [limited("m", slow.base_url, max_concurrency=2)]
        gw = await gateway_factory(cfg)
        results = await asyncio.gather(*(post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
                                         for _ in range(5)))
        assert sorted(r[0] for r in results) == [200, 200, 429, 429, 429]
        for _ in range(100):  # the slots are given back off the request's path
            status, _, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
            if status == 200:
                break
            await asyncio.sleep(0.02)
        assert status == 200
    finally:
        await slow.stop()


async def test_an_unreachable_redis_fails_open_by_default(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("IGW_TEST_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    gw = await gateway_factory(config(upstream.base_url))
    before = REGISTRY.get_sample_value("gateway_limits_backend_errors_total",
                                       {"outcome": "admitted"}) or 0
    for _ in range(5):  # over the limit of 3: nothing counts while Redis is away
        status, headers, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
        assert status == 200
        assert "x-ratelimit-limit-requests" not in headers
    after = REGISTRY.get_sample_value("gateway_limits_backend_errors_total",
                                      {"outcome": "admitted"})
    assert after == before + 5
    outages = [r for r in caplog.records if "limit counters cannot be reached" in r.message]
    assert len(outages) == 1  # logged once per outage


async def test_an_unreachable_redis_fails_closed_when_told(
        upstream: FaultyUpstream, gateway_factory: GatewayFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGW_TEST_REDIS_URL", f"redis://127.0.0.1:{closed_port()}/0")
    gw = await gateway_factory(config(upstream.base_url, on_backend_error="fail_closed"))
    status, headers, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    assert status == 503
    assert body["error"]["code"] == "limits_unavailable"
    assert headers["Retry-After"] == "1"
    assert upstream.requests == []


async def test_the_redis_url_must_be_set(upstream: FaultyUpstream,
                                        gateway_factory: GatewayFactory,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway_common.config import ConfigError

    monkeypatch.delenv("IGW_TEST_REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="IGW_TEST_REDIS_URL"):
        await gateway_factory(config(upstream.base_url))


@needs_redis
async def test_usage_is_reconciled_in_redis(gateway_factory: GatewayFactory,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The real usage replaces the estimate (queued, sent within a few tens of ms): a daily
    budget of 30 tokens, which the prompt's estimate alone would leave room in, is spent by one
    answer of more than that."""
    monkeypatch.setenv("IGW_TEST_REDIS_URL", REDIS)
    long = await FaultyUpstream("a", "ok", text=" ".join(["word"] * 60)).start()
    cfg = config(long.base_url)
    cfg["models"] = [limited("m", long.base_url, daily_tokens=30)]
    gw = await gateway_factory(cfg)
    status, _, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
    await long.stop()
    assert status == 200 and body["usage"]["total_tokens"] > 30
    for _ in range(50):
        status, _, body = await post(gw, "/v1/chat/completions", {**CHAT, "model": "m"})
        if status == 429:
            break
        await asyncio.sleep(0.02)
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
