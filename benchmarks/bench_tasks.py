"""What the gateway adds to an embedding request of 64 inputs and to a 1 MB audio upload.

Starts, as separate processes: the fake OpenAI media server of the tests (768-dimension vectors,
no request log) and the gateway (``inference-gateway serve``, auth off, models routed to the fake).
Then, in interleaved rounds, sends the same request straight to the fake and through the gateway,
and prints the p50 / p99 of each and the p50 the gateway adds (targets: ≤ 2 ms and ≤ 5 ms).

    .venv/bin/python -m benchmarks.bench_tasks            # about 30 s
    .venv/bin/python -m benchmarks.bench_tasks --rounds 10 --per-round 100 --json out.json

The embedding is asked for as base64 (the official SDK's default) on both paths, the gateway asking
its upstream for base64 too (the provider's default); the figure for floats in JSON end to end is
printed too (the gateway then parses and writes 49,152 numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from benchmarks.bench import Processes, free_port, log, pct, wait_healthy
from benchmarks.loadgen import cpu_seconds
from benchmarks.upstream import serve_fake

ROOT = Path(__file__).resolve().parent.parent
MS = 1000.0
DIM = 768
AUDIO_BYTES = 1024 * 1024


async def serve_upstream(port: int, dim: int) -> None:
    import functools

    from tests.fakes import openai_media

    # The fake's own work is not what is measured: its vectors are computed once per text.
    openai_media.vector = functools.lru_cache(maxsize=None)(openai_media.vector)
    await serve_fake(openai_media.FakeOpenAIMedia(dim=dim, record=False), port,
                     handler_cancellation=False)


def gateway_config(upstream: str, workdir: Path) -> dict[str, Any]:
    return {
        "auth": {"enabled": False},
        "log_level": "warning",
        "storage": {"data_dir": str(workdir / "data")},
        "models": [
            {"id": "bench-embed", "task": "embedding", "provider": "openai",
             "upstream_url": upstream, "upstream_model": "text-embed"},
            {"id": "bench-embed-float", "task": "embedding", "provider": "openai",
             "upstream_url": upstream, "upstream_model": "text-embed",
             "options": {"embedding_encoding": "float"}},
            {"id": "bench-whisper", "task": "transcription", "provider": "openai",
             "upstream_url": upstream, "upstream_model": "whisper-1"},
        ],
    }


def embed_body(model: str, encoding: str) -> bytes:
    inputs = [f"passage {i}: the quick brown fox jumps over the lazy dog" for i in range(64)]
    return orjson.dumps({"model": model, "input": inputs, "encoding_format": encoding})


def audio_bytes() -> bytes:
    header = b"RIFF" + (AUDIO_BYTES - 8).to_bytes(4, "little") + b"WAVEfmt "
    return header + os.urandom(AUDIO_BYTES - len(header))


Sender = Callable[[aiohttp.ClientSession], Awaitable[None]]


def embed_sender(url: str, body: bytes) -> Sender:
    async def send(s: aiohttp.ClientSession) -> None:
        async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
            data = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{url}: {r.status} {data[:200]!r}")

    return send


def audio_sender(url: str, model: str, audio: bytes) -> Sender:
    async def send(s: aiohttp.ClientSession) -> None:
        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("file", audio, filename="speech.wav", content_type="audio/wav")
        async with s.post(url, data=form) as r:
            data = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{url}: {r.status} {data[:200]!r}")

    return send


async def measure(targets: dict[str, Sender], rounds: int, per_round: int, warmup: int,
                  gateway_pid: int) -> tuple[dict[str, list[list[float]]], dict[str, float]]:
    """Interleaved rounds, so that a neighbour's load on the shared cores hits all alike.

    Also the gateway process's CPU time per request of each target: a figure that other load on
    the machine barely moves, unlike wall time."""
    out: dict[str, list[list[float]]] = {name: [] for name in targets}  # seconds, per round
    cpu: dict[str, float] = dict.fromkeys(targets, 0.0)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as s:
        for send in targets.values():
            for _ in range(warmup):
                await send(s)
        for _ in range(rounds):
            for name, send in targets.items():
                before = cpu_seconds((gateway_pid,))
                samples: list[float] = []
                for _ in range(per_round):
                    started = time.perf_counter()
                    await send(s)
                    samples.append(time.perf_counter() - started)
                out[name].append(samples)
                cpu[name] += cpu_seconds((gateway_pid,)) - before
    return out, {name: seconds / (rounds * per_round) for name, seconds in cpu.items()}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-tasks-"))
    procs = Processes(workdir)
    try:
        port = await procs.spawn("upstream", sys.executable, "-m", "benchmarks.bench_tasks",
                                 "--serve-upstream", "--dim", str(args.dim), port_line=True)
        upstream = f"http://127.0.0.1:{port}/v1"
        config = workdir / "gateway.yaml"
        config.write_text(json.dumps(gateway_config(upstream, workdir)))
        http, grpc_port = free_port(), free_port()
        await procs.spawn("gateway", sys.executable, "-m", "gateway_cli.cli", "serve",
                          "--config", str(config), "--host", "127.0.0.1",
                          "--http-port", str(http), "--grpc-port", str(grpc_port))
        await wait_healthy(f"http://127.0.0.1:{http}/health", procs)
        gateway = f"http://127.0.0.1:{http}/v1"
        audio = audio_bytes()
        tiny = orjson.dumps({"model": "text-embed", "input": ["hi"], "encoding_format": "base64"})
        tiny_gw = orjson.dumps({"model": "bench-embed", "input": ["hi"],
                                "encoding_format": "base64"})
        targets = {
            "tiny embed direct": embed_sender(f"{upstream}/embeddings", tiny),
            "tiny embed gateway": embed_sender(f"{gateway}/embeddings", tiny_gw),
            "embed direct": embed_sender(f"{upstream}/embeddings",
                                         embed_body("text-embed", "base64")),
            "embed gateway": embed_sender(f"{gateway}/embeddings",
                                          embed_body("bench-embed", "base64")),
            "embed direct float": embed_sender(f"{upstream}/embeddings",
                                               embed_body("text-embed", "float")),
            "embed gateway float": embed_sender(f"{gateway}/embeddings",
                                                embed_body("bench-embed-float", "float")),
            "audio direct": audio_sender(f"{upstream}/audio/transcriptions", "whisper-1", audio),
            "audio gateway": audio_sender(f"{gateway}/audio/transcriptions", "bench-whisper",
                                          audio),
        }
        log(f"measuring {args.rounds} rounds of {args.per_round} requests per target")
        results, cpu = await measure(targets, args.rounds, args.per_round, args.warmup,
                                     procs.pid("gateway"))
        procs.check_alive()
    finally:
        await procs.stop_all()
    every = {name: [x for samples in rounds for x in samples] for name, rounds in results.items()}
    figures = {name: {"p50_ms": pct(v, 0.5) * MS, "p99_ms": pct(v, 0.99) * MS, "n": len(v),
                      "gateway_cpu_ms": cpu[name] * MS}
               for name, v in every.items()}
    pairs = {"embedding_1_input": ("tiny embed gateway", "tiny embed direct"),
             "embedding_64_inputs": ("embed gateway", "embed direct"),
             "embedding_64_inputs_float": ("embed gateway float", "embed direct float"),
             "audio_1mb": ("audio gateway", "audio direct")}
    added = {f"{key}_p50_added_ms": figures[gw]["p50_ms"] - figures[direct]["p50_ms"]
             for key, (gw, direct) in pairs.items()}
    # The same difference in each round alone: how much the neighbours' load moved it.
    added_rounds = {f"{key}_p50_added_ms": [(pct(g, 0.5) - pct(d, 0.5)) * MS
                                            for g, d in zip(results[gw], results[direct],
                                                            strict=True)]
                    for key, (gw, direct) in pairs.items()}
    return {"figures": figures, "added": added, "added_rounds": added_rounds}


def report(result: dict[str, Any]) -> None:
    print(f"{'target':<24}{'p50 ms':>10}{'p99 ms':>10}{'n':>7}{'gateway CPU ms/req':>20}")
    for name, f in result["figures"].items():
        print(f"{name:<24}{f['p50_ms']:>10.2f}{f['p99_ms']:>10.2f}{f['n']:>7}"
              f"{f['gateway_cpu_ms']:>20.2f}")
    a, rounds, dim = result["added"], result["added_rounds"], result["dim"]

    def line(what: str, key: str, goal: float | None = None) -> None:
        each = rounds[f"{key}_p50_added_ms"]
        value = a[f"{key}_p50_added_ms"]
        verdict = "" if goal is None else (
            f" (target <= {goal:g} ms: {'PASS' if value <= goal else 'FAIL'})")
        print(f"{what}: +{value:.2f} ms at p50{verdict}; rounds {min(each):.2f}..{max(each):.2f}")

    print()
    line("embedding, 1 input (the fixed cost of a hop through edge and core)", "embedding_1_input")
    line(f"embedding, 64 inputs x {dim} dims, base64 (the SDK's default)", "embedding_64_inputs",
         2)
    line(f"embedding, 64 inputs x {dim} dims, floats in JSON end to end",
         "embedding_64_inputs_float")
    line("audio upload, 1 MB", "audio_1mb", 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--dim", type=int, default=DIM, help="embedding dimensions")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_upstream(0, args.dim))
        return
    result = asyncio.run(run(args))
    result["dim"] = args.dim
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
