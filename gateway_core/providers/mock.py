"""The built-in ``mock`` provider: deterministic answers with no model server.

It lets a new user try every route at once and serves the benchmarks. Text answers echo the last
user message in a fixed frame, one word per token, streamed with a configurable delay per token.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway_core.providers import openai_wire as wire
from gateway_core.providers.base import Call, Provider, register
from gateway_core.tokens import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class MockOptions:
    # Seconds between streamed tokens (and per token of a unary answer).
    token_delay_seconds: float = 0.0
    # A fixed reply instead of the echo.
    reply: str | None = None
    # Longest reply in tokens when the request sets no max_tokens.
    max_tokens: int = 64


@register("mock")
class MockProvider(Provider):
    Options = MockOptions
    options: MockOptions

    def _words(self, prompt: str, max_tokens: int | None) -> tuple[list[str], str]:
        text = self.options.reply
        if text is None:
            text = f"This is a mock reply to: {' '.join(prompt.split()[:48])}"
        words = text.split(" ")
        limit = max_tokens if max_tokens is not None else self.options.max_tokens
        if len(words) > limit:
            return words[:limit], "length"
        return words, "stop"

    @staticmethod
    def _last_user(req: pb.ChatRequest) -> str:
        for m in reversed(req.messages):
            if m.role == "user":
                return m.content if not m.parts else " ".join(p.text for p in m.parts)
        return ""

    @staticmethod
    def _max_tokens(params: pb.SamplingParams) -> int | None:
        return params.max_tokens if params.HasField("max_tokens") else None

    async def _pace(self, tokens: int) -> None:
        if self.options.token_delay_seconds and tokens:
            await asyncio.sleep(self.options.token_delay_seconds * tokens)

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        words, reason = self._words(self._last_user(req), self._max_tokens(req.params))
        await self._pace(len(words))
        prompt_tokens = wire.prompt_tokens_of(req.messages)
        return pb.ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.ChatChoice(
                index=0, message=pb.ChatMessage(role="assistant", content=" ".join(words)),
                finish_reason=reason,
            )],
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words),
                           total_tokens=prompt_tokens + len(words)),
        )

    async def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        words, reason = self._words(self._last_user(req), self._max_tokens(req.params))
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        delay = self.options.token_delay_seconds
        for i, word in enumerate(words):
            if delay:
                await asyncio.sleep(delay)
            yield pb.ChatChunk(id=cid, created=created, model=req.model, choices=[
                pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(
                    role="assistant" if i == 0 else "", content=word if i == 0 else " " + word))
            ])
        prompt_tokens = wire.prompt_tokens_of(req.messages)
        yield pb.ChatChunk(
            id=cid, created=created, model=req.model,
            choices=[pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(), finish_reason=reason)],
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words),
                           total_tokens=prompt_tokens + len(words)),
        )

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        words, reason = self._words(req.prompt, self._max_tokens(req.params))
        await self._pace(len(words))
        prompt_tokens = estimate_tokens(req.prompt)
        text = (req.prompt if req.echo else "") + " ".join(words)
        return pb.CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.CompletionChoice(index=0, text=text, finish_reason=reason)],
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words),
                           total_tokens=prompt_tokens + len(words)),
        )

    async def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        words, reason = self._words(req.prompt, self._max_tokens(req.params))
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        delay = self.options.token_delay_seconds
        for i, word in enumerate(words):
            if delay:
                await asyncio.sleep(delay)
            yield pb.CompletionChunk(id=cid, created=created, model=req.model, choices=[
                pb.CompletionChoice(index=0, text=word if i == 0 else " " + word)])
        prompt_tokens = estimate_tokens(req.prompt)
        yield pb.CompletionChunk(
            id=cid, created=created, model=req.model,
            choices=[pb.CompletionChoice(index=0, text="", finish_reason=reason)],
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words),
                           total_tokens=prompt_tokens + len(words)),
        )
