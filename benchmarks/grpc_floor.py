"""The fixed cost of the gateway's second hop: a bare grpc.aio call, client and server in one process
(as ``inference-gateway serve`` runs the edge and the core), with nothing behind it.

A unary echo of a ChatRequest-sized message at concurrency 1 (latency) and 64 (CPU per call), and a
server stream of 16 ChatChunk-sized messages at concurrency 64 (CPU per stream). Whatever the
gateway does, each request pays at least this on top of what a one-hop proxy pays.

    .venv/bin/python -m benchmarks.grpc_floor [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

REQUEST = b"x" * 120  # about a serialized one-message ChatRequest
CHUNK = b"y" * 60  # about a serialized one-token ChatChunk
STREAM_MESSAGES = 16


async def _echo(request: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _stream(request: bytes, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
    for _ in range(STREAM_MESSAGES):
        yield CHUNK


async def _closed_loop(call: Any, concurrency: int, seconds: float) -> tuple[int, float]:
    """(calls completed, CPU seconds of this process) over ``seconds`` after a short warm-up."""
    done = 0
    stopping = False

    async def worker() -> None:
        nonlocal done
        while not stopping:
            await call()
            done += 1

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(0.3)  # warm-up (a measurement window, not a readiness wait)
    done0, cpu0 = done, time.process_time()
    await asyncio.sleep(seconds)
    result = done - done0, time.process_time() - cpu0
    stopping = True
    await asyncio.gather(*tasks)
    return result


async def measure(seconds: float = 2.0, requests: int = 1000) -> dict[str, float]:
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Stream": grpc.unary_stream_rpc_method_handler(_stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = aio.insecure_channel(f"127.0.0.1:{port}")
    echo: aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary("/bench.Floor/Echo")
    stream: aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        "/bench.Floor/Stream")
    metadata = (("x-request-id", "0123456789abcdef0123456789abcdef"),)
    try:
        for _ in range(100):
            await echo(REQUEST, timeout=10, metadata=metadata)
        latencies = []
        for _ in range(requests):
            started = time.perf_counter()
            await echo(REQUEST, timeout=10, metadata=metadata)
            latencies.append(time.perf_counter() - started)
        latencies.sort()

        async def unary() -> None:
            await echo(REQUEST, timeout=10, metadata=metadata)

        async def streamed() -> None:
            async for _ in stream(REQUEST, timeout=10, metadata=metadata):
                pass

        calls, cpu = await _closed_loop(unary, 64, seconds)
        streams, stream_cpu = await _closed_loop(streamed, 64, seconds)
    finally:
        await channel.close()
        await server.stop(0)
    return {
        "unary_c1_p50_ms": latencies[len(latencies) // 2] * 1000,
        "unary_c64_cpu_ms": cpu / calls * 1000,
        "unary_c64_per_s": calls / seconds,
        "stream_c64_cpu_ms": stream_cpu / streams * 1000,
        "stream_messages": STREAM_MESSAGES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    import uvloop

    figures = uvloop.run(measure(args.seconds))
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:20} {value:.3f}")


if __name__ == "__main__":
    main()
