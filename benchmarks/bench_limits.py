"""What the admission check of rate limits costs, in process and with Redis.

```sh
.venv/bin/python -m benchmarks.bench_limits                 # about a minute
.venv/bin/python -m benchmarks.bench_limits --rounds 10 --per-round 300
```

Starts the fake OpenAI upstream of the tests and two ``inference-gateway serve`` processes (auth
off): one counting limits in process (``limits.backend: memory``), one in the Redis of this
machine (``redis``, on loopback). Each serves the same upstream as two models: ``free`` (no
limits) and ``limited`` (requests and tokens per minute and a daily budget, all too high to
refuse anything, so every request takes the whole admission and reconciliation path). In
interleaved rounds it sends sequential non-streaming chat requests (concurrency 1) to each model of
each gateway, and reports the p50 of each and what the limits add at p50 (targets: 0.1 ms in
process, 0.4 ms with Redis), with the spread over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bench import Processes, free_port, log, pct, wait_healthy
from benchmarks.loadgen import Target, session, unary_once

LIMITS = {"rpm": 10**9, "tpm": 10**12, "daily_tokens": 10**15}


def config(upstream: str, workdir: Path, backend: str) -> dict[str, Any]:
    models = [{"id": mid, "task": "chat", "provider": "openai", "upstream_url": upstream,
               "upstream_model": "llama", "options": {"unary_via_stream": False},
               **({"limits": LIMITS} if mid == "limited" else {})}
              for mid in ("free", "limited")]
    return {"auth": {"enabled": False}, "log_level": "warning",
            "storage": {"data_dir": str(workdir / f"data-{backend}")},
            "limits": {"backend": backend, "redis_url_env": "IGW_BENCH_REDIS",
                       "redis_prefix": f"igw-bench-{time.time_ns()}:"},
            "models": models}


async def start(procs: Processes, name: str, data: dict[str, Any]) -> str:
    path = procs.workdir / f"{name}.yaml"
    path.write_text(json.dumps(data))
    http, grpc_port = free_port(), free_port()
    script = str(Path(sys.executable).parent / "inference-gateway")
    await procs.spawn(name, script, "serve", "--config", str(path), "--host", "127.0.0.1",
                      "--http-port", str(http), "--grpc-port", str(grpc_port),
                      env={"IGW_BENCH_REDIS": "redis://127.0.0.1:6379/0"})
    await wait_healthy(f"http://127.0.0.1:{http}/health", procs)
    return f"http://127.0.0.1:{http}/v1"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6379)) != 0:
            raise SystemExit("Redis is needed on 127.0.0.1:6379 (apt-get install redis-server)")
    rounds: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="igw-limits-") as tmp:
        procs = Processes(Path(tmp))
        try:
            port = await procs.spawn("upstream", sys.executable, "-m", "benchmarks.upstream",
                                     port_line=True)
            upstream = f"http://127.0.0.1:{port}/v1"
            targets = []
            for backend in ("memory", "redis"):
                url = await start(procs, backend, config(upstream, procs.workdir, backend))
                for model in ("free", "limited"):
                    targets.append(Target(f"{backend}/{model}", url, model, model))
            async with session(1) as s:
                for t in targets:  # warm-up
                    for _ in range(100):
                        await unary_once(s, t.chat_url, t.body(stream=False))
                for r in range(args.rounds):
                    log(f"round {r + 1}/{args.rounds}")
                    for t in targets:
                        times = []
                        body = t.body(stream=False)
                        for _ in range(args.per_round):
                            started = time.perf_counter()
                            await unary_once(s, t.chat_url, body)
                            times.append(time.perf_counter() - started)
                        rounds.setdefault(t.name, []).append(pct(times, 0.5) * 1e3)
            procs.check_alive()
        except aiohttp.ClientError as exc:
            raise SystemExit(f"a request failed: {exc}") from exc
        finally:
            await procs.stop_all()
    out: dict[str, Any] = {"p50_ms": {k: sorted(v)[len(v) // 2] for k, v in rounds.items()}}
    for backend, goal in (("memory", 0.1), ("redis", 0.4)):
        added = [lim - free for lim, free in zip(rounds[f"{backend}/limited"],
                                                  rounds[f"{backend}/free"], strict=True)]
        out[f"{backend}_added_p50_ms"] = {"median": sorted(added)[len(added) // 2],
                                          "rounds": [round(a, 3) for a in added], "goal": goal}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--per-round", type=int, default=300)
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
