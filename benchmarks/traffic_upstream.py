"""Simulated model servers for ``bench_traffic``: OpenAI-compatible chat endpoints, several on
their own loopback ports in one process, each a server of one kind:

- ``plain``: answers at once (4 tokens);
- ``queue:SECONDS``: one request at a time, each taking SECONDS (a server at capacity: latency
  grows with its queue, as a busy replica's does);
- ``cache:HIT:MISS:SLOTS``: a prefix cache of SLOTS prompt prefixes (least recently used out):
  the first token after HIT seconds when the prompt's first 256 characters are cached, MISS
  seconds otherwise;
- ``slow:SECONDS``: every answer after SECONDS (a server busy generating), any number at once.

It prints ``PORTS <p1> <p2> ...`` once all listen, serves ``GET /stats`` (JSON: hits, misses,
requests) and ``POST /reset`` on each port, and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from collections import OrderedDict
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.loopback import serve_app

WORDS = ["Deep", " learning", " is", " fun"]


class Sim:
    def __init__(self, spec: str) -> None:
        kind, *args = spec.split(":")
        self.kind = kind
        self.args = [float(a) for a in args]
        self.lock = asyncio.Lock()
        self.cache: OrderedDict[str, None] = OrderedDict()
        self.hits = self.misses = self.requests = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/stats", self.stats)
        app.router.add_post("/reset", self.reset)
        return app

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"hits": self.hits, "misses": self.misses,
                                  "requests": self.requests})

    async def reset(self, request: web.Request) -> web.Response:
        self.cache.clear()
        self.hits = self.misses = self.requests = 0
        return web.json_response({})

    async def _wait(self, body: dict[str, Any]) -> None:
        if self.kind == "queue":
            async with self.lock:
                await asyncio.sleep(self.args[0])
        elif self.kind == "slow":
            await asyncio.sleep(self.args[0])
        elif self.kind == "cache":
            hit, miss, slots = self.args
            key = "".join(str(m.get("content")) for m in body["messages"])[:256]
            if key in self.cache:
                self.hits += 1
                self.cache.move_to_end(key)
                await asyncio.sleep(hit)
            else:
                self.misses += 1
                self.cache[key] = None
                if len(self.cache) > slots:
                    self.cache.popitem(last=False)
                await asyncio.sleep(miss)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.requests += 1
        await self._wait(body)
        model = body.get("model", "sim")
        if not body.get("stream"):
            return web.Response(content_type="application/json", body=orjson.dumps({
                "id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant", "content": "".join(WORDS)}}],
                "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}}))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(WORDS):
            delta: dict[str, Any] = {"content": word}
            if i == 0:
                delta["role"] = "assistant"
            await resp.write(b"data: " + orjson.dumps({
                "id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [{"index": 0, "delta": delta,
                                             "finish_reason": "stop" if i == 3 else None}]})
                + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await resp.write(b"data: " + orjson.dumps({
                "id": "chatcmpl-sim", "object": "chat.completion.chunk", "created": 1,
                "model": model, "choices": [],
                "usage": {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}})
                + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


async def serve(specs: list[str]) -> None:
    runners = []
    ports = []
    for spec in specs:
        runner, port = await serve_app(Sim(spec).app(), backlog=4096)
        runners.append(runner)
        ports.append(port)
    print("PORTS " + " ".join(map(str, ports)), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("specs", nargs="+", help="one server per spec (see the module's doc)")
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.specs))


if __name__ == "__main__":
    main()
