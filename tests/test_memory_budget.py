"""Memory stays bounded under huge upstream answers: ``serve`` as a real process, several
concurrent 20 MiB answers, its peak RSS under the configured budget plus its RSS at rest; answers
past the budget are refused with 503 and Retry-After, and served again once it frees."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import GatewayFactory, free_ports
from tests.fakes.big_answers import BigUpstream
from tests.fakes.openai_upstream import FakeOpenAI

CLI = str(Path(sys.executable).parent / "inference-gateway")
MiB = 1 << 20
ANSWER = 20 * MiB
BUDGET = 256 * MiB  # each 20 MiB answer is counted 6 times: two fit at once
CHAT = {"model": "big", "messages": [{"role": "user", "content": "hi"}]}


def kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {key} for {pid}")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    upstream = await BigUpstream(ANSWER).start()
    http_port, grpc_port = free_ports(2)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "auth": {"enabled": False}, "limits": {"max_buffered_bytes": BUDGET},
        "models": [{"id": "big", "task": "chat", "provider": "openai",
                    "upstream_url": upstream.base_url, "max_response_bytes": 24 * MiB,
                    "options": {"unary_via_stream": False}}]}))
    proc = await asyncio.create_subprocess_exec(
        CLI, "serve", "--config", str(config), "--http-port", str(http_port),
        "--grpc-port", str(grpc_port), "--data-dir", str(tmp_path / "data"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                assert proc.returncode is None, "serve exited"
                try:
                    async with s.get(base + "/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)  # polling the health route, not guessing readiness
        yield base, proc.pid
    finally:
        proc.terminate()
        await proc.wait()
        await upstream.stop()


async def test_concurrent_huge_answers_stay_within_the_budget(served: tuple[str, int]) -> None:
    base, pid = served
    at_rest = kib(pid, "VmRSS")

    async with aiohttp.ClientSession() as s:
        async def ask() -> tuple[int, int, str | None]:
            async with s.post(base + "/v1/chat/completions", json=CHAT) as r:
                return r.status, len(await r.read()), r.headers.get("Retry-After")

        answers = await asyncio.gather(*(ask() for _ in range(6)))
        served_ok = [a for a in answers if a[0] == 200]
        refused = [a for a in answers if a[0] == 503]
        assert served_ok and all(size > ANSWER for _, size, _ in served_ok)
        assert refused and all(retry == "1" for *_, retry in refused)
        assert len(served_ok) + len(refused) == len(answers)
        peak = kib(pid, "VmHWM")
        assert peak < at_rest + BUDGET, (peak / MiB, at_rest / MiB)
        # The budget is given back when each call ends: one after another, all are served.
        for _ in range(3):
            status, _, _ = await ask()
            assert status == 200


async def test_request_bodies_count_against_the_same_budget(
        upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> None:
    """A body held by a request in flight counts until the request ends; one that would pass
    the budget meanwhile is refused with 503 and Retry-After, then served once it frees."""
    gw = await gateway_factory({
        "auth": {"enabled": False}, "limits": {"max_buffered_bytes": 4 * MiB},
        "models": [{"id": "slow", "task": "chat", "provider": "openai",
                    "upstream_url": upstream.base_url, "upstream_model": "slow",
                    "max_response_bytes": 64 * 1024}]})
    upstream.slow_seconds = 30.0
    padding = "p" * (400 * 1024)  # 400 KiB, counted 6 times: 2.4 MiB of the 4
    body = {"model": "slow", "messages": [{"role": "user", "content": padding}]}
    upstream.received.clear()
    async with aiohttp.ClientSession() as s:
        first = asyncio.create_task(s.post(gw.http + "/v1/chat/completions", json=body))
        await asyncio.wait_for(upstream.received.wait(), 10)  # its body is held meanwhile
        async with s.post(gw.http + "/v1/chat/completions", json=body) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert "memory budget" in (await r.json())["error"]["message"]
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        upstream.slow_seconds = 0.0
        for _ in range(200):  # the cancelled request gives its share back as its handler ends
            async with s.post(gw.http + "/v1/chat/completions", json=body) as r:
                if r.status == 200:
                    break
                assert r.status == 503
            await asyncio.sleep(0.05)
        assert r.status == 200
