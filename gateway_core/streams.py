"""Per-request stream state: upstream OpenAI-format chunks → typed chunks.

The core's streams end with one message that carries usage and the finish reason, so the state holds
back the chunk that finishes the last choice and sends it with the usage once the upstream is done.
When the upstream reports no usage, completion tokens are counted as content-bearing chunks (servers
stream one token per chunk) and the usage is flagged as estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway_core.errors import UpstreamError
from gateway_core.tokens import estimated_usage, reported_usage
from inference_gateway.v1 import inference_pb2 as pb


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


# One upstream choice delta: (index, role, content, finish_reason).
ChatDelta = tuple[int, str, str, str]
# Deltas merged per choice index, in order of first appearance: index → [role, pieces, finish].
_Merged = dict[int, list[Any]]


def _merge_deltas(acc: _Merged, deltas: list[ChatDelta]) -> None:
    for index, role, content, finish in deltas:
        entry = acc.get(index)
        if entry is None:
            acc[index] = [role, [content], finish]
            continue
        if role and not entry[0]:
            entry[0] = role
        entry[1].append(content)
        if finish:
            entry[2] = finish


class ChatStreamState:
    """Turns upstream ``chat.completion.chunk`` dicts into ChatChunk messages.

    The events of one network read become at most one message: their deltas are merged per choice
    as plain strings, and one ChatChunk is built for them (not one per event, merged after).
    """

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
        # The deltas that finish a choice, held back to go out with the usage at the end.
        self.held: list[ChatDelta] | None = None

    def _deltas(self, data: Any) -> list[ChatDelta]:
        try:
            if not self.id:
                self.id = str(data.get("id") or "")
                self.created = int(data.get("created") or 0)
                self.fingerprint = str(data.get("system_fingerprint") or "")
            usage = data.get("usage")
            if usage:
                self.usage = reported_usage(usage)
            deltas: list[ChatDelta] = []
            for c in data.get("choices") or ():
                delta = c.get("delta") or {}
                content = delta.get("content") or ""
                role = delta.get("role") or ""
                finish = c.get("finish_reason") or ""
                if not (type(content) is str and type(role) is str and type(finish) is str):
                    raise TypeError("a delta's content, role and finish_reason are strings")
                if content:
                    self.content_chunks += 1
                deltas.append((int(c.get("index") or 0), role, content, finish))
            return deltas
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "upstream sent a stream chunk the gateway cannot read", kind="protocol"
            ) from exc

    def _chunk(self, acc: _Merged) -> pb.ChatChunk:
        chunk = pb.ChatChunk(id=self.id, created=self.created, model=self.model,
                             system_fingerprint=self.fingerprint)
        for index, (role, pieces, finish) in acc.items():
            choice = chunk.choices.add(index=index)
            choice.delta.role = role
            choice.delta.content = pieces[0] if len(pieces) == 1 else "".join(pieces)
            if finish:
                choice.finish_reason = finish
        return chunk

    def _single(self, deltas: list[ChatDelta]) -> pb.ChatChunk:
        chunk = pb.ChatChunk(id=self.id, created=self.created, model=self.model,
                             system_fingerprint=self.fingerprint)
        for index, role, content, finish in deltas:
            choice = chunk.choices.add(index=index)
            choice.delta.role = role
            choice.delta.content = content
            if finish:
                choice.finish_reason = finish
        return chunk

    def feed(self, data: Any) -> pb.ChatChunk | None:
        """One upstream chunk in; the chunk to forward now (None when held back or usage only)."""
        deltas = self._deltas(data)
        if not deltas:
            return None
        if any(d[3] for d in deltas):
            previous, self.held = self.held, deltas
            return self._single(previous) if previous else None
        return self._single(deltas)

    def feed_batch(self, events: Sequence[Any]) -> pb.ChatChunk | None:
        """Upstream chunks that arrived in one read → at most one chunk to forward now."""
        if len(events) == 1:
            return self.feed(events[0])
        acc: _Merged = {}
        for data in events:
            deltas = self._deltas(data)
            if not deltas:
                continue
            if any(d[3] for d in deltas):  # it finishes a choice: hold it, release the last held
                previous, self.held = self.held, deltas
                if previous:
                    _merge_deltas(acc, previous)
            else:
                _merge_deltas(acc, deltas)
        return self._chunk(acc) if acc else None

    def final(self) -> pb.ChatChunk:
        """The last message: the held finishing chunk (if any) with the usage."""
        acc: _Merged = {}
        if self.held:
            _merge_deltas(acc, self.held)
        chunk = self._chunk(acc)
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
