"""Per-request stream state: upstream OpenAI-format chunks → typed chunks.

The core's streams end with one message that carries usage and the finish reason, so the state holds
back the chunk that finishes the last choice and sends it with the usage once the upstream is done.
When the upstream reports no usage, completion tokens are counted as content-bearing chunks (servers
stream one token per chunk) and the usage is flagged as estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from gateway_core.errors import UpstreamError
from gateway_core.usage_estimates import estimated_usage, reported_usage
from inference_gateway.v1 import inference_pb2 as pb

# One upstream choice delta: (index, role, content, finish_reason); completions have no role.
Delta = tuple[int, str, str, str]
# Deltas merged per choice index, in order of first appearance: index → [role, pieces, finish].
_Merged = dict[int, list[Any]]

ChunkT = TypeVar("ChunkT", pb.ChatChunk, pb.CompletionChunk)


def _merge_deltas(acc: _Merged, deltas: list[Delta]) -> None:
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


class _StreamState(Generic[ChunkT]):
    """Upstream stream events → typed chunks; the subclasses read a choice and build a chunk.

    The events of one network read become at most one message: their deltas are merged per choice
    as plain strings, and one chunk is built for them (not one per event, merged after). The
    deltas that finish a choice are held back, to go out with the usage at the end.
    """

    __slots__ = ("content_chunks", "created", "held", "id", "model", "prompt_tokens", "usage")

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = ""
        self.created = 0
        self.content_chunks = 0
        self.usage: pb.Usage | None = None
        self.held: list[Delta] | None = None

    def _first(self, data: Any) -> None:
        """What the first event says of the whole stream."""
        self.id = str(data.get("id") or "")
        self.created = int(data.get("created") or 0)

    def _delta(self, choice: Any) -> Delta:
        raise NotImplementedError

    def _build(self, deltas: Iterable[Delta]) -> ChunkT:
        raise NotImplementedError

    def _deltas(self, data: Any) -> list[Delta]:
        try:
            if not self.id:
                self._first(data)
            usage = data.get("usage")
            if usage:
                self.usage = reported_usage(usage)
            deltas = []
            for c in data.get("choices") or ():
                delta = self._delta(c)
                if delta[2]:
                    self.content_chunks += 1
                deltas.append(delta)
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "upstream sent a stream chunk the gateway cannot read", kind="protocol"
            ) from exc
        return deltas

    def _merged(self, acc: _Merged) -> ChunkT:
        return self._build([(index, role, "".join(pieces), finish)
                            for index, (role, pieces, finish) in acc.items()])

    def feed(self, data: Any) -> ChunkT | None:
        """One upstream event in; the chunk to forward now (None when held back or usage only)."""
        deltas = self._deltas(data)
        if not deltas:
            return None
        if any(d[3] for d in deltas):
            previous, self.held = self.held, deltas
            return self._build(previous) if previous else None
        return self._build(deltas)

    def feed_batch(self, events: Sequence[Any]) -> ChunkT | None:
        """Upstream events that arrived in one read → at most one chunk to forward now."""
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
        return self._merged(acc) if acc else None

    def final(self) -> ChunkT:
        """The last message: the held finishing deltas (if any) with the usage."""
        acc: _Merged = {}
        if self.held:
            _merge_deltas(acc, self.held)
        chunk = self._merged(acc)
        chunk.usage.CopyFrom(self.usage or estimated_usage(self.prompt_tokens, self.content_chunks))
        return chunk


_NOT_STRINGS = "a choice's content, role and finish_reason are strings"


class ChatStreamState(_StreamState[pb.ChatChunk]):
    """Upstream ``chat.completion.chunk`` events → ChatChunk messages."""

    __slots__ = ("fingerprint",)

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        super().__init__(model, prompt_tokens)
        self.fingerprint = ""

    def _first(self, data: Any) -> None:
        super()._first(data)
        self.fingerprint = str(data.get("system_fingerprint") or "")

    def _delta(self, choice: Any) -> Delta:
        delta = choice.get("delta") or {}
        content = delta.get("content") or ""
        role = delta.get("role") or ""
        finish = choice.get("finish_reason") or ""
        if type(content) is not str or type(role) is not str or type(finish) is not str:
            raise TypeError(_NOT_STRINGS)
        return int(choice.get("index") or 0), role, content, finish

    def _build(self, deltas: Iterable[Delta]) -> pb.ChatChunk:
        chunk = pb.ChatChunk(id=self.id, created=self.created, model=self.model,
                             system_fingerprint=self.fingerprint)
        for index, role, content, finish in deltas:
            choice = chunk.choices.add(index=index)
            choice.delta.role = role
            choice.delta.content = content
            if finish:
                choice.finish_reason = finish
        return chunk


class CompletionStreamState(_StreamState[pb.CompletionChunk]):
    """Upstream ``text_completion`` stream events → CompletionChunk messages."""

    __slots__ = ()

    def _delta(self, choice: Any) -> Delta:
        text = choice.get("text") or ""
        finish = choice.get("finish_reason") or ""
        if type(text) is not str or type(finish) is not str:
            raise TypeError(_NOT_STRINGS)
        return int(choice.get("index") or 0), "", text, finish

    def _build(self, deltas: Iterable[Delta]) -> pb.CompletionChunk:
        chunk = pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
        for index, _, text, finish in deltas:
            chunk.choices.add(index=index, text=text, finish_reason=finish)
        return chunk
