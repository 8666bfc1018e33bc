"""Per-request stream state: upstream OpenAI-format chunks → typed chunks.

The core's streams end with one message that carries usage and the finish reason, so the state holds
back the chunk that finishes the last choice and sends it with the usage once the upstream is done.
When the upstream reports no usage, completion tokens are counted as content-bearing chunks (servers
stream one token per chunk) and the usage is flagged as estimated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway_core.errors import UpstreamError
from gateway_core.tokens import estimated_usage, reported_usage
from inference_gateway.v1 import inference_pb2 as pb


def merge_chat(chunks: list[pb.ChatChunk]) -> pb.ChatChunk:
    """Chunks that arrived together, as one: each choice's content joined in order."""
    out = chunks[0]
    by_index = {c.index: c for c in out.choices}
    for chunk in chunks[1:]:
        for c in chunk.choices:
            target = by_index.get(c.index)
            if target is None:
                target = by_index[c.index] = out.choices.add()
                target.CopyFrom(c)
                continue
            target.delta.content += c.delta.content
            if c.delta.role and not target.delta.role:
                target.delta.role = c.delta.role
            if c.finish_reason:
                target.finish_reason = c.finish_reason
    return out


def merge_completion(chunks: list[pb.CompletionChunk]) -> pb.CompletionChunk:
    out = chunks[0]
    by_index = {c.index: c for c in out.choices}
    for chunk in chunks[1:]:
        for c in chunk.choices:
            target = by_index.get(c.index)
            if target is None:
                target = by_index[c.index] = out.choices.add()
                target.CopyFrom(c)
                continue
            target.text += c.text
            if c.finish_reason:
                target.finish_reason = c.finish_reason
    return out


class ChatStreamState:
    """Turns upstream ``chat.completion.chunk`` dicts into ChatChunk messages."""

    __slots__ = ("content_chunks", "created", "fingerprint", "held", "id", "model",
                 "prompt_tokens", "usage")

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = ""
        self.created = 0
        self.fingerprint = ""
        self.content_chunks = 0
        self.usage: pb.Usage | None = None
        self.held: pb.ChatChunk | None = None

    def feed(self, data: Any) -> pb.ChatChunk | None:
        """One upstream chunk in; the chunk to forward now (None when held back or usage only)."""
        try:
            if not self.id:
                self.id = str(data.get("id") or "")
                self.created = int(data.get("created") or 0)
                self.fingerprint = str(data.get("system_fingerprint") or "")
            usage = data.get("usage")
            if usage:
                self.usage = reported_usage(usage)
            raw = data.get("choices") or ()
            if not raw:
                return None
            chunk = pb.ChatChunk(
                id=self.id, created=self.created, model=self.model,
                system_fingerprint=self.fingerprint,
            )
            finished = False
            for c in raw:
                delta = c.get("delta") or {}
                content = delta.get("content") or ""
                if content:
                    self.content_chunks += 1
                choice = chunk.choices.add(index=int(c.get("index") or 0))
                choice.delta.role = delta.get("role") or ""
                choice.delta.content = content
                reason = c.get("finish_reason")
                if reason:
                    choice.finish_reason = reason
                    finished = True
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "upstream sent a stream chunk the gateway cannot read", kind="protocol"
            ) from exc
        if finished:
            previous, self.held = self.held, chunk
            return previous
        return chunk

    def feed_batch(self, events: list[Any]) -> pb.ChatChunk | None:
        """Upstream chunks that arrived in one read → at most one chunk to forward now."""
        if len(events) == 1:
            return self.feed(events[0])
        out = [c for c in map(self.feed, events) if c is not None]
        return merge_chat(out) if out else None

    def final(self) -> pb.ChatChunk:
        """The last message: the held finishing chunk (if any) with the usage."""
        chunk = self.held or pb.ChatChunk(
            id=self.id, created=self.created, model=self.model,
            system_fingerprint=self.fingerprint,
        )
        chunk.usage.CopyFrom(self.usage or estimated_usage(self.prompt_tokens, self.content_chunks))
        return chunk


class CompletionStreamState:
    """Turns upstream ``text_completion`` stream dicts into CompletionChunk messages."""

    __slots__ = ("content_chunks", "created", "held", "id", "model", "prompt_tokens", "usage")

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = ""
        self.created = 0
        self.content_chunks = 0
        self.usage: pb.Usage | None = None
        self.held: pb.CompletionChunk | None = None

    def feed(self, data: Any) -> pb.CompletionChunk | None:
        try:
            if not self.id:
                self.id = str(data.get("id") or "")
                self.created = int(data.get("created") or 0)
            usage = data.get("usage")
            if usage:
                self.usage = reported_usage(usage)
            raw = data.get("choices") or ()
            if not raw:
                return None
            chunk = pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
            finished = False
            for c in raw:
                text = c.get("text") or ""
                if text:
                    self.content_chunks += 1
                reason = c.get("finish_reason") or ""
                chunk.choices.add(index=int(c.get("index") or 0), text=text, finish_reason=reason)
                finished = finished or bool(reason)
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "upstream sent a stream chunk the gateway cannot read", kind="protocol"
            ) from exc
        if finished:
            previous, self.held = self.held, chunk
            return previous
        return chunk

    def feed_batch(self, events: list[Any]) -> pb.CompletionChunk | None:
        if len(events) == 1:
            return self.feed(events[0])
        out = [c for c in map(self.feed, events) if c is not None]
        return merge_completion(out) if out else None

    def final(self) -> pb.CompletionChunk:
        chunk = self.held or pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
        chunk.usage.CopyFrom(self.usage or estimated_usage(self.prompt_tokens, self.content_chunks))
        return chunk
