"""A fake OpenAI-compatible model server (vLLM-like) on loopback, for integration tests and
benchmarks.

It speaks the real wire format, streaming included (the SSE frames are vLLM's, recorded), and its
behaviour is chosen by the request's ``model`` field:

- any name: a normal answer (``REPLY`` split into tokens); usage reported
- ``no-usage``: like normal, but no usage anywhere (llama.cpp ignores ``stream_options``)
- ``slow``: waits ``slow_seconds`` before answering (``slow-stream``: after each streamed word
  but the first)
- ``error-500``: HTTP 500 with a Python traceback as text, as llama.cpp does
- ``garbage``: HTTP 200 with a body that is not JSON
- ``bad-shape``: HTTP 200 JSON without ``choices``
- ``error-400``: HTTP 400 with OpenAI's error body
- ``error-400-openai``: HTTP 400 as OpenAI and vLLM say "context too long" (string ``code``)
- ``error-400-llamacpp``: HTTP 400 as llama.cpp's server says it (integer ``code``)
- ``error-413``, ``error-422``: those statuses (422 with TGI's ``{"error", "error_type"}``)
- ``error-429``: HTTP 429 (the upstream is rate limiting), with ``Retry-After: 7``
- ``mid-error``: a stream that sends two chunks and then an ``{"error": ...}`` event
- ``mid-error-coded``: the same, the event with OpenAI's ``type``, ``param`` and ``code``
- ``endless``: a stream that never ends (one token every 10 ms) until the client goes away
- ``text-20``: a 20-token answer; ``tool-call-20``: a stream of one tool call in 20 argument
  fragments (benchmarks: a tool stream against a text stream of as many events)

Completion streams honour ``logprobs`` (vLLM's shape: each event's token with its log-probability).

Everything it received is kept in ``requests``; ``disconnected`` is set when a client goes away
before its stream ended.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.loopback import serve_app

REPLY = "Deep learning is a branch of machine learning based on neural networks ."
TEXT_20 = ("Deep learning is a branch of machine learning based on neural networks that learn"
           " layered representations from many examples .")
# A streamed tool call as vLLM sends it: the header with the first piece, then 19 more pieces.
_ARGS = '{"city": "Paris", "unit": "celsius", "days": 3, "hourly": false, "lang": "en"}'
_PIECES = [_ARGS[i * 4:(i + 1) * 4] for i in range(19)] + [_ARGS[76:]]
TOOL_FRAGMENTS: list[dict[str, Any]] = [
    {"index": 0, "id": "chatcmpl-tool-0a1b2c", "type": "function",
     "function": {"name": "get_weather", "arguments": _PIECES[0]}},
    *({"index": 0, "function": {"arguments": piece}} for piece in _PIECES[1:])]

CONTEXT_TOO_LONG = {"error": {
    "message": "This model's maximum context length is 4096 tokens. However, your messages "
               "resulted in 5000 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
# Statuses and bodies of upstream refusals, by model name (recorded from each server).
UPSTREAM_ERRORS: dict[str, tuple[int, Any]] = {
    "error-400-openai": (400, CONTEXT_TOO_LONG),
    "error-400-llamacpp": (400, {"error": {
        "code": 400, "message": "the request exceeds the available context size, try "
        "increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 5000,
        "n_ctx": 4096}}),
    "error-413": (413, {"error": {"message": "request body too large", "type": "invalid_request_error",
                                  "param": None, "code": "request_too_large"}}),
    "error-422": (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must "
                                 "be <= 4096", "error_type": "validation"}),
}
MID_STREAM_ERROR = {"error": {"message": "generation stopped: the prompt is too long",
                              "type": "invalid_request_error", "param": "messages",
                              "code": "context_length_exceeded"}}


@dataclass
class Received:
    path: str
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: Any


@dataclass
class FakeOpenAI:
    slow_seconds: float = 2.0
    token_delay: float = 0.0
    requests: list[Received] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    # Set at each request received (clear it to wait for the next).
    received: asyncio.Event = field(default_factory=asyncio.Event)
    streams_finished: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's /tokenize (a token per word here): a ``prompt``, or ``messages`` as a chat."""
        body = orjson.loads(await request.read())
        if "messages" in body:
            text = " ".join(str(m.get("content") or "") for m in body["messages"])
            count = len(text.split()) + 2 * len(body["messages"])  # the template's tokens
        else:
            count = len(str(body.get("prompt", "")).split())
        return web.json_response({"count": count, "tokens": list(range(count)),
                                  "max_model_len": 4096})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/tokenize", self.tokenize)
        return app

    async def start(self) -> FakeOpenAI:
        self.runner, self.port = await serve_app(self.app())
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _receive(self, request: web.Request) -> dict[str, Any]:
        body = orjson.loads(await request.read())
        self.requests.append(Received(request.path, CIMultiDict(request.headers), body))
        self.received.set()
        return body  # type: ignore[no-any-return]

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": "llama", "object": "model", "created": 0, "owned_by": "vllm"}]})

    async def _special(self, model: str) -> web.Response | None:
        if model == "error-500":
            return web.Response(status=500, text=(
                "Traceback (most recent call last):\n  File \"server.py\", line 1\n"
                "ValueError: secret internal detail"))
        if model == "garbage":
            return web.Response(status=200, text="<html>this is not json</html>",
                                content_type="text/html")
        if model == "bad-shape":
            return web.json_response({"id": "x", "object": "chat.completion"})
        if model == "error-429":
            return web.json_response({"error": {"message": "too many requests", "type": "rate_limit",
                                                "code": 429}}, status=429,
                                     headers={"Retry-After": "7"})
        if model in UPSTREAM_ERRORS:
            status, body = UPSTREAM_ERRORS[model]
            return web.json_response(body, status=status)
        if model == "error-400":
            return web.json_response({"error": {
                "message": "max_tokens is too large", "type": "BadRequestError", "param": None,
                "code": 400}}, status=400)
        if model == "slow":
            try:
                await asyncio.sleep(self.slow_seconds)
            except asyncio.CancelledError:
                self.disconnected.set()
                raise
        return None

    def _tokens(self, body: dict[str, Any]) -> tuple[list[str], str]:
        words = REPLY.split(" ") if body.get("model") != "text-20" else TEXT_20.split(" ")
        limit = body.get("max_tokens")
        if isinstance(limit, int) and limit < len(words):
            return words[:limit], "length"
        return words, "stop"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        model = body.get("model", "")
        special = await self._special(model)
        if special is not None:
            return special
        words, reason = self._tokens(body)
        if body.get("stream"):
            return await self._stream_chat(request, body, words, reason)
        text = " ".join(words)
        resp: dict[str, Any] = {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant",
                                                                 "content": text},
                                         "logprobs": None, "finish_reason": reason}],
        }
        if model != "no-usage":
            resp["usage"] = {"prompt_tokens": 12, "completion_tokens": len(words),
                             "total_tokens": 12 + len(words)}
        return web.json_response(resp)

    async def _stream_chat(self, request: web.Request, body: dict[str, Any], words: list[str],
                           reason: str) -> web.StreamResponse:
        model = body["model"]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        created = int(time.time())

        def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
            return b"data: " + orjson.dumps({
                "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                "model": model, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                             "finish_reason": finish}],
            }) + b"\n\n"

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}, None))
            if model == "tool-call-20":
                words, reason = [], "tool_calls"
                for frag in TOOL_FRAGMENTS:
                    await resp.write(chunk({"tool_calls": [frag]}, None))
            i = 0
            while True:
                if model == "endless":
                    word = f"tok{i}"
                elif i < len(words):
                    word = words[i]
                else:
                    break
                if model == "mid-error" and i == 2:
                    await resp.write(b'data: {"error": {"message": "CUDA out of memory", '
                                     b'"type": "InternalServerError", "code": 500}}\n\n')
                    return resp
                if model == "mid-error-coded" and i == 2:
                    await resp.write(b"data: " + orjson.dumps(MID_STREAM_ERROR) + b"\n\n")
                    return resp
                # slow-stream: the first word at once, then slow (a stall mid-stream).
                delay = 0.01 if model == "endless" else (
                    (self.slow_seconds if i else 0.0) if model == "slow-stream"
                    else self.token_delay)
                if delay:
                    await asyncio.sleep(delay)
                await resp.write(chunk({"content": word if i == 0 else " " + word}, None))
                i += 1
            await resp.write(chunk({}, reason))
            opts = body.get("stream_options") or {}
            if opts.get("include_usage") and model != "no-usage":
                await resp.write(b"data: " + orjson.dumps({
                    "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": 12, "completion_tokens": len(words),
                              "total_tokens": 12 + len(words)}}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            self.streams_finished += 1
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        return resp

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        model = body.get("model", "")
        special = await self._special(model)
        if special is not None:
            return special
        words, reason = self._tokens(body)
        if not body.get("stream"):
            resp: dict[str, Any] = {
                "id": "cmpl-fake", "object": "text_completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": " ".join(words), "logprobs": None,
                             "finish_reason": reason}],
            }
            if model != "no-usage":
                resp["usage"] = {"prompt_tokens": 5, "completion_tokens": len(words),
                                 "total_tokens": 5 + len(words)}
            return web.json_response(resp)
        resp_s = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp_s.prepare(request)
        top = body.get("logprobs")
        offset = 0
        try:
            for i, word in enumerate(words):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                last = i == len(words) - 1
                text = word if i == 0 else " " + word
                logprobs = None if top is None else {  # vLLM's shape, one token per event
                    "tokens": [text], "token_logprobs": [-0.25], "text_offset": [offset],
                    "top_logprobs": [{text: -0.25}] if top else None}
                offset += len(text)
                await resp_s.write(b"data: " + orjson.dumps({
                    "id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model,
                    "choices": [{"index": 0, "text": text, "logprobs": logprobs,
                                 "finish_reason": reason if last else None}],
                }) + b"\n\n")
            opts = body.get("stream_options") or {}
            if opts.get("include_usage") and model != "no-usage":
                await resp_s.write(b"data: " + orjson.dumps({
                    "id": "cmpl-fake", "object": "text_completion", "created": 0,
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": 5, "completion_tokens": len(words),
                              "total_tokens": 5 + len(words)}}) + b"\n\n")
            await resp_s.write(b"data: [DONE]\n\n")
            await resp_s.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        return resp_s
