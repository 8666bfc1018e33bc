"""What each dialect costs next to the ``openai`` dialect, for the same upstream call.

Starts, as separate processes, the fake OpenAI upstream of the tests and the gateway
(``inference-gateway serve``, auth off, one model routed to the fake). Then it measures each
dialect's request next to the openai request that makes the same upstream call, back to back in
the order A B B A (so that a neighbour's load on shared cores weighs on both alike), in rounds:

- chat, unary and streamed: ``openai`` vs ``endpoint``, ``mlflow``, ``unified``
- completion, unary and streamed: ``openai`` ``/v1/completions`` vs ``tgi`` ``/generate`` and
  ``/generate_stream``

Two figures per target: the gateway process's CPU time per request under concurrent load (its
cost: every thread, from /proc schedstat), and the median latency of sequential requests. Each is
reported as a ratio to its openai baseline (per pair, median over rounds); the issue's target is a
CPU ratio of at most 1.10. ``openai-chat-again`` measures the baseline against itself: its ratio's
distance from 1.00 is the noise of the run (on shared cores, several percent).

    .venv/bin/python -m benchmarks.bench_dialects              # about a minute
    .venv/bin/python -m benchmarks.bench_dialects --rounds 7 --json out.json
    .venv/bin/python -m benchmarks.bench_dialects --model mock  # the built-in mock, no upstream
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.bench import free_port, log, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is deep learning?"}]
PROMPT = "What is deep learning?"
# The unified dialect always sends its defaults; the baselines send the same values.
SAMPLING = {"temperature": 0.7, "top_p": 0.9, "max_tokens": 32}
TARGET_RATIO = 1.10


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    body: dict[str, Any]
    stream: bool
    # The openai target making the same upstream call ("" for a baseline).
    baseline: str = ""


def targets(model: str) -> list[Target]:
    chat = {"model": model, "messages": MESSAGES, **SAMPLING}
    completion = {"model": model, "prompt": PROMPT, **SAMPLING}
    out: list[Target] = []
    for stream in (False, True):
        sfx = "-stream" if stream else ""
        extra: dict[str, Any] = {"stream": True} if stream else {}
        # Usage on: what unified and tgi streams always carry.
        usage = {"stream_options": {"include_usage": True}} if stream else {}
        base_chat, base_completion = f"openai-chat{sfx}", f"openai-completion{sfx}"
        out += [
            Target(base_chat, "/v1/chat/completions", {**chat, **extra, **usage}, stream),
            # A/A control: the baseline against itself shows the noise floor of the machine.
            Target(f"openai-chat{sfx}-again", "/v1/chat/completions", {**chat, **extra, **usage},
                   stream, base_chat),
            Target(f"endpoint-chat{sfx}", "/v2/bench/openai/v1/chat/completions",
                   {**chat, **extra, **usage}, stream, base_chat),
            Target(f"mlflow-chat{sfx}", f"/gateway/{model}/invocations",
                   {"messages": MESSAGES, **SAMPLING, **extra, **usage}, stream, base_chat),
            Target(f"unified-chat{sfx}", "/v1/inference/chat",
                   {"model": model, "messages": MESSAGES,
                    "parameters": {"maxTokens": SAMPLING["max_tokens"], **extra}},
                   stream, base_chat),
            Target(base_completion, "/v1/completions", {**completion, **extra, **usage},
                   stream),
            Target(f"tgi-generate{sfx}", "/generate_stream" if stream else "/generate",
                   {"inputs": PROMPT, "parameters": {
                       "max_new_tokens": SAMPLING["max_tokens"], "do_sample": True,
                       "temperature": SAMPLING["temperature"], "top_p": SAMPLING["top_p"]}},
                   stream, base_completion),
        ]
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of a process, all threads, in nanosecond resolution (Linux schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):  # a thread that just ended
            continue
    return total / 1e9


@dataclass
class Figures:
    cpu_ms: list[float] = field(default_factory=list)  # gateway CPU per request, per measure
    p50_ms: list[float] = field(default_factory=list)  # sequential latency, per measure
    cpu_ratio: list[float] = field(default_factory=list)  # to the baseline, per round
    p50_ratio: list[float] = field(default_factory=list)


async def _once(s: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> None:
    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        data = await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}: {data[:300]!r}")
        if stream and (b'"error"' in data or not data.startswith(b"data:")):
            raise RuntimeError(f"{url}: a failed stream: {data[-300:]!r}")


class Client:
    """One target's requests, on its own warm connections."""

    def __init__(self, base: str, target: Target, concurrency: int) -> None:
        self.url, self.body, self.stream = base + target.path, orjson.dumps(target.body), \
            target.stream
        self.concurrency = concurrency
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))

    async def cpu(self, pid: int, n: int) -> float:
        """Gateway CPU seconds spent on ``n`` requests sent ``concurrency`` at a time."""
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                await _once(self.session, self.url, self.body, self.stream)

        cpu0 = cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(self.concurrency)))
        return cpu_seconds(pid) - cpu0

    async def latencies(self, n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter()
            await _once(self.session, self.url, self.body, self.stream)
            out.append(time.perf_counter() - started)
        return out


async def measure_pair(pid: int, base: Client, dialect: Client, n_cpu: int, n_lat: int
                       ) -> tuple[tuple[float, float], tuple[float, float]]:
    """(CPU ms/request, p50 ms) of the baseline and the dialect, measured back to back in the
    order A B B A, so that a change of load during the pair weighs on both alike."""
    for c in (base, dialect):  # open both clients' connections again (idle ones expire)
        await c.cpu(pid, 4 * c.concurrency)
    cpu = {id(base): 0.0, id(dialect): 0.0}
    lat: dict[int, list[float]] = {id(base): [], id(dialect): []}
    for c in (base, dialect, dialect, base):
        cpu[id(c)] += await c.cpu(pid, n_cpu // 2)
        lat[id(c)] += await c.latencies(n_lat // 2)
    per = 2 * (n_cpu // 2)
    return ((cpu[id(base)] / per * 1000, statistics.median(lat[id(base)]) * 1000),
            (cpu[id(dialect)] / per * 1000, statistics.median(lat[id(dialect)]) * 1000))


def gateway_config(upstream: str, model: str) -> dict[str, Any]:
    return {
        "auth": {"enabled": False},
        "log_level": "warning",
        "models": [
            {"id": "bench-fake", "task": "chat", "provider": "openai", "upstream_url": upstream,
             "upstream_model": "llama"},
            {"id": "bench-mock", "task": "chat", "provider": "mock"},
        ],
        "endpoints": {"bench": [model]},
        "tgi_model": model,
    }


def start_processes(args: argparse.Namespace, workdir: Path
                    ) -> tuple[list[subprocess.Popen[bytes]], str]:
    """The fake upstream and the gateway; returns them (the gateway last) and the edge's URL."""
    model = "bench-mock" if args.model == "mock" else "bench-fake"
    up_port, http_port, grpc_port = free_port(), free_port(), free_port()
    config = workdir / "config.yaml"
    config.write_text(json.dumps(gateway_config(f"http://127.0.0.1:{up_port}/v1", model)))
    exe = shutil.which("inference-gateway", path=str(Path(sys.executable).parent)) or ""
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.upstream", "--port", str(up_port)],
                              cwd=ROOT, stdout=subprocess.DEVNULL)]
    procs.append(subprocess.Popen(
        [exe, "serve", "--config", str(config), "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--data-dir", str(workdir / "data"),
         "--log-level", "warning"], cwd=ROOT, stdout=subprocess.DEVNULL))
    return procs, f"http://127.0.0.1:{http_port}"


async def run(args: argparse.Namespace, procs: list[subprocess.Popen[bytes]],
              base: str) -> dict[str, Any]:
    def alive() -> None:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.args!r} exited with {p.returncode}")

    await wait_healthy(base + "/health", alive)
    pid = procs[-1].pid
    all_targets = targets("bench-mock" if args.model == "mock" else "bench-fake")
    clients = {t.name: Client(base, t, args.concurrency) for t in all_targets}
    figures = {t.name: Figures() for t in all_targets}
    try:
        for c in clients.values():
            await c.latencies(20)  # warm connections and code paths
        pairs = [t for t in all_targets if t.baseline and (not args.only or t.name in args.only)]
        for r in range(args.rounds):
            random.shuffle(pairs)
            for t in pairs:
                b, d = figures[t.baseline], figures[t.name]
                (b_cpu, b_p50), (d_cpu, d_p50) = await measure_pair(
                    pid, clients[t.baseline], clients[t.name], args.requests,
                    args.latency_requests)
                b.cpu_ms.append(b_cpu)
                b.p50_ms.append(b_p50)
                d.cpu_ms.append(d_cpu)
                d.p50_ms.append(d_p50)
                d.cpu_ratio.append(d_cpu / b_cpu)
                d.p50_ratio.append(d_p50 / b_p50)
            log(f"round {r + 1}/{args.rounds} done")
    finally:
        for c in clients.values():
            await c.session.close()
    return report(all_targets, figures, args)


def report(all_targets: list[Target], figures: dict[str, Figures],
           args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    print(f"{'target':<26}{'CPU ms/req':>11}{'ratio':>8}{'p50 ms':>9}{'ratio':>8}  vs")
    for t in all_targets:
        f = figures[t.name]
        if not f.cpu_ms:
            continue
        row: dict[str, Any] = {"cpu_ms_per_request": statistics.median(f.cpu_ms),
                               "p50_ms": statistics.median(f.p50_ms)}
        cpu_ratio = lat_ratio = ""
        if t.baseline:
            # Ratios per pair measured back to back, then the median over rounds.
            row["cpu_ratio"] = statistics.median(f.cpu_ratio)
            row["p50_ratio"] = statistics.median(f.p50_ratio)
            row["within_target"] = row["cpu_ratio"] <= TARGET_RATIO
            cpu_ratio, lat_ratio = f"{row['cpu_ratio']:.3f}", f"{row['p50_ratio']:.3f}"
        rows[t.name] = row
        print(f"{t.name:<26}{row['cpu_ms_per_request']:>11.3f}{cpu_ratio:>8}"
              f"{row['p50_ms']:>9.3f}{lat_ratio:>8}  {t.baseline or '(baseline)'}")
    misses = [n for n, r in rows.items() if r.get("within_target") is False
              and not n.startswith("openai-")]
    print(f"target: each dialect's CPU per request within {TARGET_RATIO:.2f}x of openai's: "
          + ("met" if not misses else f"missed by {', '.join(misses)}"))
    return {"model": args.model, "rounds": args.rounds, "requests": args.requests,
            "concurrency": args.concurrency, "targets": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--model", choices=["fake", "mock"], default="fake",
                   help="fake: the fake OpenAI upstream over HTTP; mock: the built-in mock")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=300, help="per target per round, for CPU")
    p.add_argument("--latency-requests", type=int, default=60,
                   help="sequential requests per target per round, for latency")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--only", nargs="+", metavar="TARGET", help="measure only these dialect targets")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-dialects-"))
    procs, base = start_processes(args, workdir)
    try:
        result = asyncio.run(run(args, procs, base))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
