"""An OpenAI-compatible upstream whose answers are huge: a chat completion of ``size`` bytes of
text (the model name ``big``), built once and sent as fast as the socket takes it."""

from __future__ import annotations

import orjson
from aiohttp import web

from tests.fakes.loopback import serve_app


def big_chat(size: int) -> bytes:
    return orjson.dumps({
        "id": "chatcmpl-big", "object": "chat.completion", "created": 1, "model": "big",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "x" * size}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


class BigUpstream:
    def __init__(self, size: int) -> None:
        self.body = big_chat(size)
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def chat(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=self.body, content_type="application/json")

    async def start(self) -> BigUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner, self.port = await serve_app(app)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
