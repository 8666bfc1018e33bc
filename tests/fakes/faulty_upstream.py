"""An OpenAI-compatible upstream (vLLM's wire format) that fails on demand.

One instance is one replica. ``fault`` is what it does to every request, unless ``queue`` holds
faults for the next requests (taken one per request, in order). Faults:

- ``ok``: a normal answer ("<name> says hello world"), unary or streamed;
- ``500``, ``502``, ``503``: that status with an OpenAI error body; ``429``: with ``Retry-After``
  (``retry_after``); ``400``: a client error;
- ``slow_headers``: nothing for ``delay`` seconds, then a normal answer;
- ``slow_first_token``: headers and the role chunk at once, the first token after ``delay``;
- ``stall``: two tokens, then nothing for ``delay`` seconds;
- ``reset_before``: headers, then the connection reset before any token;
- ``reset``: two tokens, then the connection reset;
- ``garbage``: 200 and a body that is not JSON (as ``text/plain`` for a stream request);
- ``not_sse``: a stream request answered 200 with a JSON body;
- ``no_choices``: a stream whose events carry no ``choices``, a unary answer with none;
- ``empty``: a stream of ``[DONE]`` alone (llama.cpp's answer to a prompt over its context).

A stream request with vLLM's ``continue_final_message`` continues the assistant text it ends with
(``text`` is the whole answer, the same on every replica of a test that needs it).

It records every request (``requests``, and their headers in ``headers_seen``), the handlers
cut by their client (``disconnects``) and the requests in flight (``in_flight``, ``peak``);
``/metrics`` serves ``metrics_text`` (vLLM's names) and ``/health`` answers ``health_status``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.loopback import serve_app


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(body) + b"\n\n"


class FaultyUpstream:
    """One fault-injecting replica on a loopback port (see the module's docstring)."""

    def __init__(self, name: str = "a", fault: str = "ok", *, delay: float = 5.0,
                 retry_after: str = "1", text: str | None = None) -> None:
        self.name = name
        self.text = text or f"{name} says hello world"
        self.fault = fault
        self.queue: deque[str] = deque()
        self.delay = delay
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.disconnects = 0
        self.in_flight = 0
        self.peak = 0
        self.metrics_text = ""
        self.metrics_polls = 0
        self.health_status = 200
        self.health_polls = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def words(self) -> list[str]:
        first, *rest = self.text.split(" ")
        return [first, *(" " + w for w in rest)]

    def _continued(self, body: dict[str, Any]) -> list[str] | None:
        """vLLM's ``continue_final_message``: the words after the assistant text already sent
        (None when that text is not a prefix of this replica's answer)."""
        if not body.get("continue_final_message"):
            return self.words
        if body.get("add_generation_prompt") is not False:
            return None
        sent = body["messages"][-1]["content"]
        words = self.words
        for k in range(len(words) + 1):
            if "".join(words[:k]) == sent:
                return words[k:]
        return None

    async def start(self) -> FaultyUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner, self.port = await serve_app(app)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics_polls += 1
        return web.Response(text=self.metrics_text, content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        self.health_polls += 1
        return web.Response(status=self.health_status)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        body["_at"] = time.monotonic()
        self.requests.append(body)
        self.headers_seen.append(dict(request.headers))
        fault = self.queue.popleft() if self.queue else self.fault
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._answer(request, body, fault)
        except asyncio.CancelledError:
            self.disconnects += 1
            raise
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any],
                      fault: str) -> web.StreamResponse:
        model = str(body.get("model"))
        stream = bool(body.get("stream"))
        if fault.isdigit():
            status = int(fault)
            headers = {"Retry-After": self.retry_after} if status == 429 else {}
            return web.json_response(
                {"error": {"message": f"{self.name} failed with {status}", "type": "server_error",
                           "param": None, "code": None}}, status=status, headers=headers)
        if fault == "slow_headers":
            await asyncio.sleep(self.delay)
            fault = "ok"
        if fault == "garbage":
            return web.Response(text="<html>502 proxy error", content_type="text/plain")
        if fault == "not_sse" or (fault == "no_choices" and not stream):
            return web.json_response({"id": "x", "object": "chat.completion", "model": model,
                                      **({} if fault == "no_choices" else {"choices": []})})
        if not stream:
            if fault != "ok":
                await asyncio.sleep(self.delay)
            return web.json_response({
                "id": "chatcmpl-f", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "".join(self.words)}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(self.words),
                          "total_tokens": 3 + len(self.words)}})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if fault == "empty":
            await resp.write(b"data: [DONE]\n\n")
            return resp
        if fault == "no_choices":
            for _ in range(3):
                await resp.write(b'data: {"id": "x", "object": "chat.completion.chunk"}\n\n')
            await resp.write(b"data: [DONE]\n\n")
            return resp
        words = self._continued(body)
        if words is None:
            await resp.write(b'data: {"error": {"message": "not a continuation"}}\n\n')
            return resp
        await resp.write(_chunk(model, {"role": "assistant", "content": ""}))
        if fault == "reset_before":
            await self._reset(request)
            return resp
        if fault == "slow_first_token":
            await asyncio.sleep(self.delay)
        for i, word in enumerate(words):
            await resp.write(_chunk(model, {"content": word}))
            if i == 1 and fault == "stall":
                await asyncio.sleep(self.delay)
            if i == 1 and fault == "reset":
                await self._reset(request)
                return resp
        await resp.write(_chunk(model, {}, "stop"))
        usage = {"id": "chatcmpl-f", "object": "chat.completion.chunk", "created": 1,
                 "model": model, "choices": [],
                 "usage": {"prompt_tokens": 3, "completion_tokens": len(words),
                           "total_tokens": 3 + len(words)}}
        await resp.write(b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n")
        return resp

    @staticmethod
    async def _reset(request: web.Request) -> None:
        await asyncio.sleep(0.05)  # let what was written leave first
        transport = request.transport
        if transport is not None:
            transport.abort()
