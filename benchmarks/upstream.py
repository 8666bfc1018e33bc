"""Runs the fake OpenAI upstream of the tests as its own process, for the benchmarks.

It prints ``PORT <n>`` once it listens (the benchmark reads that line: no sleeps), then serves until
SIGTERM. Unlike in the tests it keeps no record of what it received, so that a long run does not
grow its memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.loopback import serve_app
from tests.fakes.openai_media import FakeOpenAIMedia
from tests.fakes.openai_upstream import FakeOpenAI


class BenchUpstream(FakeOpenAI):
    """The test fake, minus the request log."""

    async def _receive(self, request: web.Request) -> dict[str, Any]:
        body = orjson.loads(await request.read())
        return body  # type: ignore[no-any-return]


async def serve_fake(fake: FakeOpenAI | FakeOpenAIMedia, port: int, *,
                     handler_cancellation: bool) -> None:
    """Serve a test fake for another process: print ``PORT <n>``, stop on SIGINT or SIGTERM."""
    fake.runner, fake.port = await serve_app(fake.app(), handler_cancellation=handler_cancellation,
                                             port=port, backlog=1024)
    print(f"PORT {fake.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--slow-seconds", type=float, default=0.005,
                        help="delay between tokens of the 'slow-stream' model (paced streams)")
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve_fake(BenchUpstream(slow_seconds=args.slow_seconds), args.port,
                              handler_cancellation=True))


if __name__ == "__main__":
    main()
