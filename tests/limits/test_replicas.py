"""A limit means the same with three replicas as with one: three ``serve`` processes sharing the
Redis counters and the PostgreSQL token store of this machine and CI, 300 concurrent requests
spread over them with a token limited to 100 a minute: exactly 100 admitted; the same for tokens
per minute and for concurrency. Skipped with a message where Redis or PostgreSQL is absent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.auth.test_store import pg_dsn  # noqa: F401  (the fixture: a fresh schema)
from tests.conftest import free_ports
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.limits.test_redis import needs_redis

REPLICAS = 3
BURST = 300
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}


class Replicas:
    def __init__(self, urls: list[str], admin: str) -> None:
        self.urls = urls
        self.admin = admin

    async def token(self, s: aiohttp.ClientSession, **limits: int) -> str:
        async with s.post(self.urls[0] + "/admin/tokens",
                          headers={"Authorization": f"Bearer {self.admin}"},
                          json={"name": "burst", "models": ["m"], "limits": limits}) as r:
            body = await r.json()
            assert r.status == 201, body
            return str(body["secret"])

    async def burst(self, s: aiohttp.ClientSession, secret: str) -> dict[int, int]:
        """``BURST`` concurrent requests, round robin over the replicas: count by status."""
        async def one(i: int) -> int:
            async with s.post(self.urls[i % REPLICAS] + "/v1/chat/completions", json=CHAT,
                              headers={"Authorization": f"Bearer {secret}"}) as r:
                await r.read()
                return r.status

        counts: dict[int, int] = {}
        for status in await asyncio.gather(*(one(i) for i in range(BURST))):
            counts[status] = counts.get(status, 0) + 1
        return counts


@pytest.fixture
async def replicas(pg_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[Replicas, FaultyUpstream]]:  # noqa: F811
    upstream = await FaultyUpstream("a", "slow_headers", delay=1.5).start()
    admin = "igw_admin_" + secrets.token_urlsafe(24)
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({
        "auth": {"enabled": True, "admin_token_env": "IGW_TEST_ADMIN"},
        "storage": {"backend": "postgres", "dsn_env": "IGW_TEST_PG"},
        "limits": {"backend": "redis", "redis_url_env": "IGW_TEST_REDIS",
                   "redis_prefix": f"igw-test-{secrets.token_hex(4)}:"},
        "log_level": "warning",
        "models": [{"id": "m", "task": "chat", "provider": "openai",
                    "upstream_url": upstream.base_url}],
    }))
    env = {**os.environ, "IGW_TEST_ADMIN": admin, "IGW_TEST_PG": pg_dsn,
           "IGW_TEST_REDIS": "redis://127.0.0.1:6379/0"}
    ports = free_ports(2 * REPLICAS)
    procs = []
    urls = []
    try:
        for i in range(REPLICAS):
            http, grpc_port = ports[2 * i], ports[2 * i + 1]
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gateway_cli.cli", "serve", "--config", str(config),
                "--http-port", str(http), "--grpc-port", str(grpc_port),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env))
            urls.append(f"http://127.0.0.1:{http}")
        async with aiohttp.ClientSession() as s:
            for url, proc in zip(urls, procs, strict=True):
                for _ in range(600):
                    assert proc.returncode is None, "a replica exited"
                    with contextlib.suppress(aiohttp.ClientError):
                        async with s.get(url + "/health") as r:
                            if r.status == 200:
                                break
                    await asyncio.sleep(0.05)  # polling readiness, not guessing it
        yield Replicas(urls, admin), upstream
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(proc.wait(), 20)
        await upstream.stop()


@needs_redis
async def test_three_replicas_admit_exactly_the_limit(
        replicas: tuple[Replicas, FaultyUpstream]) -> None:
    gw, upstream = replicas
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as s:
        # Requests per minute.
        counts = await gw.burst(s, await gw.token(s, rpm=100))
        assert counts == {200: 100, 429: BURST - 100}

        # Tokens per minute: the request's estimate read from a refusal, then a limit of 100
        # of them (and half of one more); the upstream answers after 1.5 s, so that nothing
        # is reconciled during the burst.
        probe = await gw.token(s, tpm=1)
        async with s.post(gw.urls[0] + "/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {probe}"}) as r:
            message = (await r.json())["error"]["message"]
        match = re.search(r"the request's (\d+) estimated tokens", message)
        assert match, message
        estimate = int(match.group(1))
        counts = await gw.burst(s, await gw.token(s, tpm=100 * estimate + estimate // 2))
        assert counts == {200: 100, 429: BURST - 100}

        # Concurrency: 300 at once, each in flight for 1.5 s.
        counts = await gw.burst(s, await gw.token(s, max_concurrency=10))
        assert counts == {200: 10, 429: BURST - 10}
    # Every admitted request reached the upstream; no refused one did.
    assert len(upstream.requests) == 210
