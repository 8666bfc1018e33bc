"""Hostile clients against ``inference-gateway serve``: slowloris, an idle-connection flood past the
connection cap, and concurrent huge upstream answers.

```sh
.venv/bin/python -m benchmarks.hostile                      # about a minute
.venv/bin/python -m benchmarks.hostile --idle 3000 --slow 500 --answers 8 --json out.json
```

Figures: how long half-sent request heads are kept (against ``header_timeout_seconds``); with
``--idle`` sockets opened and left silent, how many the gateway holds (its open file descriptors)
and how fast the rest are refused, while ``/health`` on a new connection is timed; the peak RSS of
the process while ``--answers`` 20 MiB answers are asked for at once, against the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bench import Processes, free_port, log, wait_healthy
from tests.fakes.big_answers import BigUpstream

MiB = 1 << 20


def status_of(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def slowloris(port: int, count: int, within: float) -> dict[str, Any]:
    """``count`` connections that send half a head; seconds until the gateway closed each."""
    async def one() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        try:
            async with asyncio.timeout(within):
                while await reader.read(4096):
                    pass
        except (TimeoutError, ConnectionError):
            pass
        writer.close()
        return time.monotonic() - started

    cut = sorted(await asyncio.gather(*(one() for _ in range(count))))
    return {"connections": count, "closed_after_s_min": round(cut[0], 2),
            "closed_after_s_max": round(cut[-1], 2)}


async def idle_flood(base: str, port: int, pid: int, count: int) -> dict[str, Any]:
    """``count`` silent connections; what the gateway holds and how fast the rest are refused."""
    fds_before = open_fds(pid)
    socks: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    started = time.monotonic()
    for _ in range(count):
        socks.append(await asyncio.open_connection("127.0.0.1", port))
    opened = time.monotonic() - started
    async with aiohttp.ClientSession() as s:
        t0 = time.monotonic()
        async with s.get(base + "/health", headers={"Connection": "close"}) as r:
            health = (r.status, round((time.monotonic() - t0) * 1000, 1))
        async with s.get(base + "/v1/models", headers={"Connection": "close"}) as r:
            other = (r.status, r.headers.get("Retry-After"))
    held_fds = open_fds(pid)
    await asyncio.sleep(3.0)  # past the 2 s an over-cap connection has to send its request
    refused = held = 0
    for reader, _ in socks:
        try:
            async with asyncio.timeout(0.002):
                refused += (await reader.read(12)).startswith(b"HTTP/1.1 503")
        except TimeoutError:
            held += 1  # nothing said, still open
        except ConnectionError:
            pass
    result = {"idle_sockets": count, "seconds_to_open": round(opened, 2),
            "gateway_fds_before": fds_before, "gateway_fds_during": held_fds,
            "answered_503": refused, "still_open_3s_later": held,
            "gateway_fds_after": open_fds(pid), "health_status_ms": health,
            "other_route_status_retry_after": other,
            "gateway_rss_mb": round(status_of(pid, "VmRSS") / MiB, 1)}
    for _, writer in socks:
        writer.close()
    return result


async def huge_answers(base: str, pid: int, count: int) -> dict[str, Any]:
    at_rest = status_of(pid, "VmRSS")
    async with aiohttp.ClientSession() as s:
        async def ask() -> int:
            async with s.post(base + "/v1/chat/completions", json={
                    "model": "big", "messages": [{"role": "user", "content": "x"}]}) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(ask() for _ in range(count)))
    return {"answers_20mib_at_once": count, "served": statuses.count(200),
            "refused_503": statuses.count(503), "rss_at_rest_mb": round(at_rest / MiB, 1),
            "peak_rss_mb": round(status_of(pid, "VmHWM") / MiB, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    upstream = await BigUpstream(20 * MiB).start()
    workdir = Path(tempfile.mkdtemp(prefix="igw-hostile-"))
    procs = Processes(workdir)
    limits = {"header_timeout_seconds": args.header_timeout, "max_connections": args.cap,
              "max_buffered_bytes": args.budget_mib * MiB}
    config = {"auth": {"enabled": False}, "log_level": "warning", "limits": limits,
              "storage": {"data_dir": str(workdir / "data")},
              "models": [{"id": "big", "task": "chat", "provider": "openai",
                          "upstream_url": upstream.base_url, "max_response_bytes": 24 * MiB}]}
    (workdir / "gateway.yaml").write_text(json.dumps(config))
    port = free_port()
    exe = str(Path(sys.executable).parent / "inference-gateway")
    await procs.spawn("gateway", exe, "serve", "--config", str(workdir / "gateway.yaml"),
                      "--http-port", str(port), "--grpc-port", str(free_port()))
    base = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base + "/health", procs)
        pid = procs.pid("gateway")
        out: dict[str, Any] = {"limits": limits}
        log("huge answers")
        out["memory"] = await huge_answers(base, pid, args.answers)
        log("slowloris")
        out["slowloris"] = await slowloris(port, args.slow, args.header_timeout + 30)
        log("idle flood")
        out["idle_flood"] = await idle_flood(base, port, pid, args.idle)
        return out
    finally:
        await procs.stop_all()
        await upstream.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=3000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--cap", type=int, default=1024)
    parser.add_argument("--header-timeout", type=float, default=5.0)
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--budget-mib", type=int, default=256)
    parser.add_argument("--json")
    args = parser.parse_args()
    out = asyncio.run(run(args))
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
