"""``serve --workers N`` (SPEC §13): N processes on the same ports, connections spread between
them by the kernel, one store; /metrics sums the workers' counters; signals reach them all."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp

from tests.conftest import free_ports


async def test_two_workers_share_the_ports_and_the_metrics(tmp_path: Path) -> None:
    http, grpc_port = free_ports(2)
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({
        "auth": {"enabled": False}, "storage": {"data_dir": str(tmp_path / "data")},
        "access_log": "off",
        "models": [{"id": "mock-chat", "task": "chat", "provider": "mock"}]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_cli.cli", "serve", "--config", str(config),
        "--http-port", str(http), "--grpc-port", str(grpc_port), "--workers", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ}, start_new_session=True)
    base = f"http://127.0.0.1:{http}"
    try:
        ready = 0
        for _ in range(600):
            with contextlib.suppress(aiohttp.ClientError):
                async with aiohttp.ClientSession() as s, s.get(base + "/health/ready") as r:
                    ready = r.status
            if ready == 200:
                break
            assert proc.returncode is None
            await asyncio.sleep(0.05)  # polling readiness
        await asyncio.sleep(0.5)  # (the second worker may still be starting)
        body = {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(40):  # a connection each: the kernel picks a worker per connection
            async with aiohttp.ClientSession() as s, \
                    s.post(base + "/v1/chat/completions", json=body) as r:
                assert r.status == 200
        async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
            text = await r.text()
        served = sum(float(v) for v in re.findall(
            r'^gateway_requests_total\{[^}]*model="mock-chat"[^}]*\} (\S+)', text, re.M))
        assert served == 40, text[:2000]
        pids = set(re.findall(r'pid="(\d+)"', text))
        assert len(pids) == 2, pids
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
