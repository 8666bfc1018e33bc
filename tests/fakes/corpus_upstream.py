"""A fake OpenAI-compatible upstream that replays the recorded cases of ``tests/fixtures/
openai_corpus/``: the request's ``model`` names the case, the answer is the case's ``response``
(unary) or its ``stream`` events as SSE, then ``data: [DONE]``.

``together`` sends a whole stream in one write, so that the gateway reads its events together
(the path that merges events); otherwise each event is its own write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.loopback import serve_app

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "openai_corpus"


def load_cases() -> dict[str, dict[str, Any]]:
    return {p.stem: orjson.loads(p.read_bytes()) for p in sorted(CORPUS.glob("*.json"))}


@dataclass
class CorpusUpstream:
    cases: dict[str, dict[str, Any]]
    together: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> CorpusUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.answer)
        app.router.add_post("/v1/completions", self.answer)
        self.runner, self.port = await serve_app(app)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def answer(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.received.append(body)
        case = self.cases[body["model"]]
        if "stream" not in case:
            return web.Response(body=orjson.dumps(case["response"]),
                                content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        frames = [b"data: " + orjson.dumps(e) + b"\n\n" for e in case["stream"]]
        frames.append(b"data: [DONE]\n\n")
        if self.together:
            await resp.write(b"".join(frames))
        else:
            for f in frames:
                await resp.write(f)
        await resp.write_eof()
        return resp
