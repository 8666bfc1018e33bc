"""Traffic benchmarks: failover, balancing, prefix affinity, large prompts, overload.

```sh
.venv/bin/python -m benchmarks.bench_traffic            # about 3 minutes
.venv/bin/python -m benchmarks.bench_traffic --json out.json
```

One run starts, as separate processes on loopback ports, the simulated model servers of
``traffic_upstream.py`` and ``inference-gateway serve`` (auth off) with a model per scenario, and
measures each scenario against its reference in the same run:

- failover: a pool whose first endpoint refuses connections (health ejection off, so every other
  request meets it) against a pool of the healthy endpoint alone: added latency p50 at
  concurrency 1 of the requests that failed over (``x-gateway-attempts: 2``);
- balancing: two endpoints, one 5x slower (servers that take one request at a time, 2 ms and
  10 ms), Poisson arrivals at 150 requests/s: p99 latency of ``least_outstanding`` against
  ``round_robin``;
- prefix affinity: four endpoints with a simulated prefix cache (8 prompt prefixes each; first
  token after 2 ms on a hit, 20 ms on a miss), 16 system prompts shared by the requests, 8
  concurrent streams: hit rate and TTFT p50 of ``prefix_affinity`` against ``round_robin``;
- large prompts: 220 KB prompts, 150 concurrent streams: TTFT p50 through the gateway against
  the same requests sent to the upstream directly, and through the thin proxy of ``bench.py``
  (one aiohttp hop that forwards bytes: the floor of a Python proxy);
- overload: 5,000 concurrent requests against a model capped at 100 in flight (each takes
  0.5 s upstream; ``queue_timeout`` 2 s): how many were served and refused, the slowest refusal,
  ``/health`` latency meanwhile, and the gateway's peak RSS over its RSS at rest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.bench import Processes, free_port, log, pct, wait_healthy
from benchmarks.loadgen import memory_bytes

SPECS = ["plain", "queue:0.002", "queue:0.010", *["cache:0.002:0.020:8"] * 4, "slow:0.5"]
SCENARIOS = ("failover", "balancing", "prefix", "big_prompts", "overload")
CHAT = {"messages": [{"role": "user", "content": "What is deep learning?"}], "max_tokens": 16}


def config(ports: list[int], refused: int, workdir: Path) -> dict[str, Any]:
    url = [f"http://127.0.0.1:{p}/v1" for p in ports]
    plain, fast, slow, caches, busy = url[0], url[1], url[2], url[3:7], url[7]

    def model(mid: str, urls: list[str], **kw: Any) -> dict[str, Any]:
        return {"id": mid, "task": "chat", "provider": "openai",
                "upstreams": [{"url": u} for u in urls], **kw}

    never_eject = {"consecutive_failures": 1_000_000_000}
    return {
        "auth": {"enabled": False}, "log_level": "error",
        "storage": {"data_dir": str(workdir / "data")},
        "limits": {"max_connections": 8192},
        "models": [
            model("healthy", [plain]),
            model("failover", [f"http://127.0.0.1:{refused}/v1", plain], balance="round_robin",
                  health=never_eject, retries={"budget_percent": 100, "min_retries": 1000}),
            model("lo", [fast, slow], balance="least_outstanding"),
            model("rr", [fast, slow], balance="round_robin"),
            model("pa", caches, balance="prefix_affinity"),
            model("pa-rr", caches, balance="round_robin"),
            model("big", [plain]),
            model("capped", [busy], max_concurrency=100, queue_timeout=2, max_queued=1000),
        ],
    }


async def post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]
               ) -> tuple[int, float, dict[str, str]]:
    start = time.perf_counter()
    async with s.post(url, data=orjson.dumps(body),
                      headers={"Content-Type": "application/json"}) as r:
        await r.read()
        return r.status, time.perf_counter() - start, dict(r.headers)


async def ttft(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    first = None
    async with s.post(url, data=orjson.dumps({**body, "stream": True}),
                      headers={"Content-Type": "application/json"}) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
        async for line in r.content:
            if first is None and line.startswith(b"data: {") and b'"content"' in line:
                first = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"{url}: a stream without content")
    return first


async def failover(gw: str, n: int) -> dict[str, float]:
    """Added p50 of the failover path over the healthy path, sequential requests."""
    healthy: list[float] = []
    moved: list[float] = []
    async with aiohttp.ClientSession() as s:
        for _ in range(50):
            await post(s, gw + "/chat/completions", {**CHAT, "model": "healthy"})
            await post(s, gw + "/chat/completions", {**CHAT, "model": "failover"})
        for _ in range(n):
            status, took, _ = await post(s, gw + "/chat/completions", {**CHAT, "model": "healthy"})
            assert status == 200
            healthy.append(took)
            status, took, headers = await post(s, gw + "/chat/completions",
                                               {**CHAT, "model": "failover"})
            assert status == 200
            if headers.get("x-gateway-attempts") == "2":
                moved.append(took)
    return {"healthy_p50_ms": pct(healthy, 0.5) * 1e3, "failover_p50_ms": pct(moved, 0.5) * 1e3,
            "added_p50_ms": (pct(moved, 0.5) - pct(healthy, 0.5)) * 1e3,
            "failovers": len(moved)}


async def open_loop(gw: str, model: str, rate: float, seconds: float) -> list[float]:
    """Poisson arrivals at ``rate`` per second for ``seconds``; the latencies."""
    out: list[float] = []
    rng = random.Random(7)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async def one() -> None:
            status, took, _ = await post(s, gw + "/chat/completions", {**CHAT, "model": model})
            if status != 200:
                raise RuntimeError(f"{model}: {status}")
            out.append(took)

        tasks = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
    return out


async def balancing(gw: str, rate: float, seconds: float) -> dict[str, float]:
    out: dict[str, float] = {}
    for model in ("lo", "rr"):
        await open_loop(gw, model, rate, 1.0)  # warm-up
        lat = await open_loop(gw, model, rate, seconds)
        out[f"{model}_p50_ms"] = pct(lat, 0.5) * 1e3
        out[f"{model}_p99_ms"] = pct(lat, 0.99) * 1e3
    out["p99_rr_over_lo"] = out["rr_p99_ms"] / out["lo_p99_ms"]
    return out


async def prefix(gw: str, ports: list[int], n: int) -> dict[str, float]:
    systems = [f"System prompt {i}: " + "You are a careful assistant. " * 70 for i in range(16)]
    out: dict[str, float] = {}
    rng = random.Random(11)
    async with aiohttp.ClientSession() as s:
        for model in ("pa", "pa-rr"):
            async def worker(count: int, into: list[float], model: str = model) -> None:
                for _ in range(count):
                    body = {"model": model, "max_tokens": 16, "messages": [
                        {"role": "system", "content": rng.choice(systems)},
                        {"role": "user", "content": f"question {rng.random()}"}]}
                    into.append(await ttft(s, gw + "/chat/completions", body))

            warm: list[float] = []
            await asyncio.gather(*(worker(20, warm) for _ in range(8)))  # the caches fill
            times: list[float] = []
            before = [await stats(s, p) for p in ports]
            await asyncio.gather(*(worker(n // 8, times) for _ in range(8)))
            after = [await stats(s, p) for p in ports]
            hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before, strict=True))
            misses = sum(a["misses"] - b["misses"] for a, b in zip(after, before, strict=True))
            out[f"{model}_hit_rate"] = hits / max(1, hits + misses)
            out[f"{model}_ttft_p50_ms"] = pct(times, 0.5) * 1e3
    return out


async def stats(s: aiohttp.ClientSession, port: int) -> dict[str, int]:
    async with s.get(f"http://127.0.0.1:{port}/stats") as r:
        data: dict[str, int] = await r.json()
        return data


async def big_prompts(gw: str, direct: str, thin: str, concurrency: int, per_worker: int
                      ) -> dict[str, float]:
    prompt = ("lorem ipsum dolor sit amet " * 8200)[:220 * 1024]
    body = {"max_tokens": 16, "messages": [{"role": "user", "content": prompt}]}
    out: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for name, url, model in (("direct", direct, "sim"), ("gateway", gw, "big"),
                                 ("thin", thin, "sim"), ("direct2", direct, "sim"),
                                 ("gateway2", gw, "big"), ("thin2", thin, "sim")):
            times: list[float] = []

            async def worker(url: str = url, model: str = model, times: list[float] = times
                             ) -> None:
                for _ in range(per_worker):
                    times.append(await ttft(s, url + "/chat/completions",
                                            {**body, "model": model}))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            out[f"{name}_ttft_p50_ms"] = pct(times, 0.5) * 1e3
    d = (out["direct_ttft_p50_ms"] + out["direct2_ttft_p50_ms"]) / 2
    g = (out["gateway_ttft_p50_ms"] + out["gateway2_ttft_p50_ms"]) / 2
    t = (out["thin_ttft_p50_ms"] + out["thin2_ttft_p50_ms"]) / 2
    return {"direct_ttft_p50_ms": d, "gateway_ttft_p50_ms": g, "thin_proxy_ttft_p50_ms": t,
            "added_ttft_p50_ms": g - d, "thin_proxy_added_ttft_p50_ms": t - d}


async def overload(gw: str, base: str, pid: int, n: int) -> dict[str, float]:
    at_rest = memory_bytes((pid,))
    health: list[float] = []
    done = asyncio.Event()
    statuses: dict[int, int] = {}
    refusals: list[float] = []
    served: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def probe() -> None:
            while not done.is_set():
                start = time.perf_counter()
                async with s.get(base + "/health") as r:
                    await r.read()
                    assert r.status == 200
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.05)

        async def one() -> None:
            status, took, _ = await post(s, gw + "/chat/completions", {**CHAT, "model": "capped"})
            statuses[status] = statuses.get(status, 0) + 1
            (served if status == 200 else refusals).append(took)

        prober = asyncio.create_task(probe())
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - start
        done.set()
        await prober
    peak = memory_bytes((pid,), b"VmHWM:")
    return {"requests": n, "served": statuses.get(200, 0), "refused_429": statuses.get(429, 0),
            "other": sum(v for k, v in statuses.items() if k not in (200, 429)),
            "slowest_refusal_s": max(refusals, default=0.0),
            "wall_s": wall, "health_p50_ms": pct(health, 0.5) * 1e3,
            "health_max_ms": max(health) * 1e3, "health_probes": len(health),
            "rss_at_rest_mib": at_rest / 2**20, "rss_peak_mib": peak / 2**20}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="igw-traffic-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            await procs.spawn("sims", sys.executable, "-m", "benchmarks.traffic_upstream", *SPECS)
            ports = await _ports(procs)
            cfg = workdir / "gateway.yaml"
            cfg.write_text(json.dumps(config(ports, free_port(), workdir)))
            http, grpc_port = free_port(), free_port()
            script = str(Path(sys.executable).parent / "inference-gateway")
            await procs.spawn("gateway", script, "serve", "--config", str(cfg), "--host",
                              "127.0.0.1", "--http-port", str(http), "--grpc-port",
                              str(grpc_port))
            base = f"http://127.0.0.1:{http}"
            await wait_healthy(base + "/health", procs)
            gw = base + "/v1"
            only = set(args.only or SCENARIOS)
            if "failover" in only:
                log("failover")
                results["failover"] = await failover(gw, args.requests)
            if "balancing" in only:
                log("balancing")
                results["balancing"] = await balancing(gw, args.rate, args.seconds)
            if "prefix" in only:
                log("prefix affinity")
                results["prefix"] = await prefix(gw, ports[3:7], args.requests)
            if "big_prompts" in only:
                log("large prompts")
                thin = await procs.spawn("thin-proxy", sys.executable, "-m",
                                         "benchmarks.thin_proxy", "--upstream",
                                         f"http://127.0.0.1:{ports[0]}", port_line=True)
                results["big_prompts"] = await big_prompts(
                    gw, f"http://127.0.0.1:{ports[0]}/v1", f"http://127.0.0.1:{thin}/v1", 150,
                    args.big_per_worker)
            if "overload" in only:
                log("overload")
                results["overload"] = await overload(gw, base, procs.pid("gateway"),
                                                     args.overload)
            procs.check_alive()
        finally:
            await procs.stop_all()
    return results


async def _ports(procs: Processes) -> list[int]:
    for _ in range(600):
        text = (procs.workdir / "sims.log").read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("PORTS "):
                return [int(p) for p in line.split()[1:]]
        procs.check_alive()
        await asyncio.sleep(0.05)  # polling the log for the ports line
    raise RuntimeError("the simulated upstreams did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=800, help="failover and prefix requests")
    p.add_argument("--rate", type=float, default=150.0, help="balancing: arrivals per second")
    p.add_argument("--seconds", type=float, default=10.0, help="balancing: seconds per balancer")
    p.add_argument("--big-per-worker", type=int, default=2, help="large prompts per worker")
    p.add_argument("--overload", type=int, default=5000, help="overload: concurrent requests")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--only", action="append", choices=SCENARIOS, help="run this scenario only "
                   "(repeatable)")
    args = p.parse_args(argv)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
