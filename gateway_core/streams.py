"""Per-request stream state: upstream OpenAI-format chunks → typed chunks.

The core's streams end with one message that carries usage and the finish reason, so the state holds
back the chunk that finishes the last choice and sends it with the usage once the upstream is done.
When the upstream reports no usage, completion tokens are counted as content-bearing chunks (servers
stream one token per chunk) and the usage is flagged as estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gateway_core.errors import UpstreamError
from gateway_core.tokens import estimated_usage, reported_usage
from inference_gateway.v1 import inference_pb2 as pb

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
    """Turns upstream ``text_completion`` stream dicts into CompletionChunk messages (the events of
    one read merged as in ChatStreamState; a delta's role is always empty here)."""

    __slots__ = ("content_chunks", "created", "held", "id", "model", "prompt_tokens", "usage")

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = ""
        self.created = 0
        self.content_chunks = 0
        self.usage: pb.Usage | None = None
        self.held: list[ChatDelta] | None = None

    def _deltas(self, data: Any) -> list[ChatDelta]:
        try:
            if not self.id:
                self.id = str(data.get("id") or "")
                self.created = int(data.get("created") or 0)
            usage = data.get("usage")
            if usage:
                self.usage = reported_usage(usage)
            deltas: list[ChatDelta] = []
            for c in data.get("choices") or ():
                text = c.get("text") or ""
                finish = c.get("finish_reason") or ""
                if not (type(text) is str and type(finish) is str):
                    raise TypeError("a choice's text and finish_reason are strings")
                if text:
                    self.content_chunks += 1
                deltas.append((int(c.get("index") or 0), "", text, finish))
            return deltas
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "upstream sent a stream chunk the gateway cannot read", kind="protocol"
            ) from exc

    def _chunk(self, choices: Iterable[tuple[int, str, str]]) -> pb.CompletionChunk:
        chunk = pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
        for index, text, finish in choices:
            chunk.choices.add(index=index, text=text, finish_reason=finish)
        return chunk

    def _merged(self, acc: _Merged) -> pb.CompletionChunk:
        return self._chunk((index, "".join(pieces), finish)
                           for index, (_, pieces, finish) in acc.items())

    def feed(self, data: Any) -> pb.CompletionChunk | None:
        deltas = self._deltas(data)
        if not deltas:
            return None
        if any(d[3] for d in deltas):
            previous, self.held = self.held, deltas
            deltas = previous or []
            if not deltas:
                return None
        return self._chunk((index, text, finish) for index, _, text, finish in deltas)

    def feed_batch(self, events: Sequence[Any]) -> pb.CompletionChunk | None:
        if len(events) == 1:
            return self.feed(events[0])
        acc: _Merged = {}
        for data in events:
            deltas = self._deltas(data)
            if not deltas:
                continue
            if any(d[3] for d in deltas):
                previous, self.held = self.held, deltas
                if previous:
                    _merge_deltas(acc, previous)
            else:
                _merge_deltas(acc, deltas)
        return self._merged(acc) if acc else None

    def final(self) -> pb.CompletionChunk:
        acc: _Merged = {}
        if self.held:
            _merge_deltas(acc, self.held)
        chunk = self._merged(acc)
        chunk.usage.CopyFrom(self.usage or estimated_usage(self.prompt_tokens, self.content_chunks))
        return chunk
