"""Probes and shutdown (SPEC §13): /health/live and /health/ready; on SIGTERM readiness fails
first, for ``timeouts.drain_seconds``, while requests are still served; then the listeners close
and the requests in flight finish within the grace period. Run as a new user runs it: ``serve``
as a process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import free_ports
from tests.fakes.faulty_upstream import FaultyUpstream


async def _status(s: aiohttp.ClientSession, url: str) -> int:
    async with s.get(url) as r:
        return r.status


async def test_sigterm_drains_then_stops_and_in_flight_requests_finish(tmp_path: Path) -> None:
    slow = await FaultyUpstream("a", "slow_headers", delay=2.5).start()
    http, grpc_port = free_ports(2)
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({
        "auth": {"enabled": False}, "storage": {"data_dir": str(tmp_path / "data")},
        "timeouts": {"drain_seconds": 1.5, "shutdown_grace_seconds": 10},
        "models": [{"id": "slow", "task": "chat", "provider": "openai",
                    "upstream_url": slow.base_url},
                   {"id": "mock-chat", "task": "chat", "provider": "mock"}]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_cli.cli", "serve", "--config", str(config),
        "--http-port", str(http), "--grpc-port", str(grpc_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{http}"
    chat = {"messages": [{"role": "user", "content": "hi"}]}
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                with contextlib.suppress(aiohttp.ClientError):
                    if await _status(s, base + "/health/ready") == 200:
                        break
                assert proc.returncode is None
                await asyncio.sleep(0.05)  # polling readiness
            assert await _status(s, base + "/health/live") == 200
            in_flight = asyncio.ensure_future(s.post(base + "/v1/chat/completions",
                                                     json={**chat, "model": "slow"}))
            for _ in range(500):  # polled: the request reached the upstream
                if slow.in_flight:
                    break
                await asyncio.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            for _ in range(100):
                if await _status(s, base + "/health/ready") == 503:
                    break
                await asyncio.sleep(0.01)
            assert time.monotonic() - signalled < 0.5
            # Draining: not ready, but alive and still serving.
            assert await _status(s, base + "/health/live") == 200
            async with s.post(base + "/v1/chat/completions",
                              json={**chat, "model": "mock-chat"}) as r:
                assert r.status == 200
            # After the drain the listener closes; the request in flight still finishes.
            resp = await in_flight
            assert resp.status == 200
            assert "a says hello world" in await resp.text()
            assert await asyncio.wait_for(proc.wait(), 15) == 0
            assert time.monotonic() - signalled >= 1.5
            refused = False
            try:
                await _status(s, base + "/health/live")
            except aiohttp.ClientConnectionError:
                refused = True
            assert refused
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await slow.stop()
