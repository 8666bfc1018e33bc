"""The load generator: an aiohttp client on loopback, bounded by request counts and durations.

Three measurements, each against one ``Target`` at a time:

- ``latencies``: sequential non-streaming requests (concurrency 1), seconds per request;
- ``ttfts``: sequential streaming requests, seconds to the first frame that carries a token;
- ``throughput``: a closed loop of ``concurrency`` workers for a fixed window after a warm-up,
  completed requests per second, plus the CPU the target's own processes spent per request
  (read from ``/proc``, so it does not depend on how the 2 cores were shared).

``soak`` runs the closed loop for minutes and samples the resident memory of the target's processes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import orjson

JSON_HEADERS = {"Content-Type": "application/json"}
DONE = b"data: [DONE]\n\n"
PROMPT = "What is deep learning?"
_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A request failed where the benchmark needs it to succeed."""


@dataclass(frozen=True)
class Target:
    """One thing to measure: an OpenAI-compatible base URL and the model name to send it."""

    name: str
    base_url: str  # ends in /v1
    model: str
    # The model whose stream is paced (a few ms between tokens), for TTFT without coalescing.
    paced_model: str
    # Processes whose CPU and memory belong to this target (the proxy or the gateway; the
    # upstream behind them is shared by every target and not counted).
    pids: tuple[int, ...] = ()

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def body(self, stream: bool, model: str | None = None) -> bytes:
        data: dict[str, object] = {
            "model": model or self.model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 64,
        }
        if stream:
            data["stream"] = True
        return orjson.dumps(data)


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU time of the processes so far (all their threads)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def memory_bytes(pids: tuple[int, ...], key: bytes = b"VmRSS:") -> int:
    """Resident set (``VmRSS``) or its peak (``VmHWM``) of the processes, summed."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, force_close=False),
        timeout=aiohttp.ClientTimeout(total=60),
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


def _stream_ok(data: bytes) -> bool:
    return data.endswith(DONE) and b'{"error"' not in data


async def unary_once(s: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with s.post(url, data=body, headers=JSON_HEADERS) as r:
        data = await r.read()
        if r.status != 200:
            raise BenchError(f"{url}: HTTP {r.status}: {data[:300]!r}")


async def stream_once(s: aiohttp.ClientSession, url: str, body: bytes) -> None:
    """One stream read whole; it must end with ``[DONE]`` and carry no error."""
    async with s.post(url, data=body, headers=JSON_HEADERS) as r:
        data = await r.read()
        if r.status != 200 or not _stream_ok(data):
            raise BenchError(f"{url}: HTTP {r.status}: {data[:300]!r}")


async def first_token(s: aiohttp.ClientSession, url: str, body: bytes) -> float:
    """Seconds to the first SSE frame with a non-empty token; the rest is read to the end."""
    started = time.perf_counter()
    ttft = 0.0
    async with s.post(url, data=body, headers=JSON_HEADERS) as r:
        if r.status != 200:
            raise BenchError(f"{url}: HTTP {r.status}: {(await r.read())[:300]!r}")
        async for line in r.content:
            if ttft or not line.startswith(b"data: {"):
                continue
            choices = orjson.loads(line[6:]).get("choices") or ()
            if choices and (choices[0].get("delta") or {}).get("content"):
                ttft = time.perf_counter() - started
    if not ttft:
        raise BenchError(f"{url}: the stream carried no token")
    return ttft


async def latencies(target: Target, n: int, warmup: int = 50) -> list[float]:
    """Seconds per non-streaming request, ``n`` requests one after the other."""
    body = target.body(stream=False)
    out: list[float] = []
    async with session(1) as s:
        for _ in range(warmup):
            await unary_once(s, target.chat_url, body)
        for _ in range(n):
            started = time.perf_counter()
            await unary_once(s, target.chat_url, body)
            out.append(time.perf_counter() - started)
    return out


async def ttfts(target: Target, n: int, warmup: int = 20, model: str | None = None) -> list[float]:
    """Seconds to the first token of streaming requests, ``n`` one after the other."""
    body = target.body(stream=True, model=model)
    async with session(1) as s:
        for _ in range(warmup):
            await first_token(s, target.chat_url, body)
        return [await first_token(s, target.chat_url, body) for _ in range(n)]


@dataclass
class Throughput:
    rps: float
    ok: int
    errors: int
    seconds: float
    # CPU seconds the target's own processes spent per completed request (None: no processes).
    cpu_per_request: float | None
    # CPU seconds the load generator spent per completed request.
    client_cpu_per_request: float


@dataclass
class _Loop:
    """A closed loop of workers; counts completed requests until stopped."""

    target: Target
    concurrency: int
    stream_share: float  # fraction of workers that stream
    ok: int = 0
    errors: int = 0
    last_error: str = ""
    stopping: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def _worker(self, s: aiohttp.ClientSession, stream: bool) -> None:
        body = self.target.body(stream=stream)
        url = self.target.chat_url
        while not self.stopping:
            try:
                async with s.post(url, data=body, headers=JSON_HEADERS) as r:
                    data = await r.read()
                if r.status == 200 and (not stream or _stream_ok(data)):
                    self.ok += 1
                else:
                    self.errors += 1
                    self.last_error = f"HTTP {r.status}: {data[-200:]!r}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.errors += 1
                self.last_error = repr(exc)

    def start(self, s: aiohttp.ClientSession) -> None:
        streaming = round(self.concurrency * self.stream_share)
        self.tasks = [
            asyncio.create_task(self._worker(s, i < streaming)) for i in range(self.concurrency)
        ]

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks)


async def throughput(
    target: Target, *, concurrency: int, seconds: float, warmup: float, stream: bool
) -> Throughput:
    """Completed requests per second over ``seconds``, after ``warmup`` seconds of the same load."""
    loop = _Loop(target, concurrency, 1.0 if stream else 0.0)
    async with session(concurrency) as s:
        loop.start(s)
        await asyncio.sleep(warmup)  # the measurement window, not a readiness wait
        ok0, started = loop.ok, time.perf_counter()
        cpu0, client0 = cpu_seconds(target.pids), time.process_time()
        await asyncio.sleep(seconds)
        ok1, elapsed = loop.ok, time.perf_counter() - started
        cpu1, client1 = cpu_seconds(target.pids), time.process_time()
        await loop.stop()
    done = ok1 - ok0
    if done == 0:
        raise BenchError(f"{target.name}: no request completed ({loop.last_error})")
    return Throughput(
        rps=done / elapsed, ok=done, errors=loop.errors, seconds=elapsed,
        cpu_per_request=(cpu1 - cpu0) / done if target.pids else None,
        client_cpu_per_request=(client1 - client0) / done,
    )


@dataclass
class Soak:
    seconds: float
    warmup: float
    rps: float
    errors: int
    # (seconds since start, resident bytes) every sample, warm-up included.
    samples: list[tuple[float, int]]

    def after_warmup(self) -> list[int]:
        return [rss for t, rss in self.samples if t >= self.warmup]

    @property
    def spread(self) -> float:
        """(max - min) / min of the resident memory after warm-up."""
        rss = self.after_warmup()
        return (max(rss) - min(rss)) / min(rss) if rss else 0.0

    @property
    def growth(self) -> float:
        """(last - first) / first of the resident memory after warm-up."""
        rss = self.after_warmup()
        return (rss[-1] - rss[0]) / rss[0] if rss else 0.0


async def soak(
    target: Target, *, concurrency: int, seconds: float, warmup: float, interval: float = 2.0,
    progress: Callable[[str], None] | None = None,
) -> Soak:
    """``warmup`` then ``seconds`` of load, half the workers streaming, half not; the target's RSS
    is sampled every ``interval`` throughout (``Soak.after_warmup`` keeps the measured part)."""
    loop = _Loop(target, concurrency, 0.5)
    samples: list[tuple[float, int]] = []
    async with session(concurrency) as s:
        started = time.perf_counter()
        loop.start(s)
        while (now := time.perf_counter() - started) < warmup + seconds:
            samples.append((now, memory_bytes(target.pids)))
            if progress is not None and len(samples) % 15 == 0:
                progress(f"soak {now:5.0f}s  rss {samples[-1][1] / 2**20:.1f} MiB  "
                         f"{loop.ok / now:.0f} req/s")
            await asyncio.sleep(interval)
        elapsed = time.perf_counter() - started
        samples.append((elapsed, memory_bytes(target.pids)))
        await loop.stop()
    return Soak(seconds=elapsed, warmup=warmup, rps=loop.ok / elapsed, errors=loop.errors,
                samples=samples)
