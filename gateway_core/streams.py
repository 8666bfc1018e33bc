"""Per-request stream state: upstream OpenAI-format chunks → typed chunks.

The core's streams end with one message that carries usage and the finish reason, so the state holds
back the chunk that finishes the last choice and sends it with the usage once the upstream is done.
When the upstream reports no usage, completion tokens are counted as content-bearing chunks (servers
stream one token per chunk) and the usage is flagged as estimated.

Events that arrived in one network read go on as one message where that loses nothing, merged the
way OpenAI's clients accumulate a stream: text pieces joined per choice, tool-call fragments joined
per call ``index``, log-probability entries appended. Plain text deltas take a fast path. An event
with fields the typed API does not know at the choice or delta level is sent as its own message,
and events are merged only while their own unknown top-level fields are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

from gateway_core import openai_answers as answers
from gateway_core.errors import UpstreamError
from gateway_core.usage_estimates import estimated_usage
from inference_gateway.v1 import inference_pb2 as pb

# One plain upstream choice delta: (index, role, content, finish_reason); completions have no role.
Delta = tuple[int, str, str, str]
# Deltas merged per choice index, in order of first appearance: index → [role, pieces, finish].
_Merged = dict[int, list[Any]]

ChunkT = TypeVar("ChunkT", pb.ChatChunk, pb.CompletionChunk)

_TOP_KEYS = answers.TOP_KEYS
_CHOICE_KEYS = answers.CHOICE_KEYS
_PLAIN_CHOICE = frozenset({"index", "delta", "text", "finish_reason", "logprobs"})
_PLAIN_DELTA = frozenset({"role", "content"})
_DELTA_KEYS = frozenset({"role", "content", "tool_calls", "refusal", "reasoning_content",
                         "reasoning"})
_NOT_STRINGS = "a choice's content, role and finish_reason are strings"


def _merge_deltas(acc: _Merged, deltas: Iterable[Delta]) -> None:
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


def _join(a: list[str] | None, b: list[str] | None) -> list[str] | None:
    if b is None:
        return a
    if a is None:
        return list(b)
    a.extend(b)
    return a


class Rich:
    """One choice's deltas with more than role and text: tool calls, reasoning, refusal,
    log-probabilities, unknown fields. Several merge into one as OpenAI's clients accumulate."""

    __slots__ = ("content", "delta_extra", "extra", "finish", "index", "logprobs", "reasoning",
                 "reasoning_content", "refusal", "refusal_logprobs", "role", "tools")

    def __init__(self, index: int) -> None:
        self.index = index
        self.role = ""
        self.finish = ""
        self.content: list[str] | None = None
        self.reasoning_content: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.refusal: list[str] | None = None
        # Per call index: [id, type, name, argument pieces, unknown fields] (None: not given).
        self.tools: dict[int, list[Any]] | None = None
        self.logprobs: list[pb.TokenLogprob] | None = None
        self.refusal_logprobs: list[pb.TokenLogprob] | None = None
        self.extra: dict[str, Any] | None = None
        self.delta_extra: dict[str, Any] | None = None

    @property
    def mergeable(self) -> bool:
        return self.extra is None and self.delta_extra is None

    @property
    def has_text(self) -> bool:
        return bool(self.content or self.reasoning_content or self.reasoning or self.refusal
                    or self.tools)

    def merge(self, other: Rich) -> None:
        if other.role and not self.role:
            self.role = other.role
        if other.finish:
            self.finish = other.finish
        self.content = _join(self.content, other.content)
        self.reasoning_content = _join(self.reasoning_content, other.reasoning_content)
        self.reasoning = _join(self.reasoning, other.reasoning)
        self.refusal = _join(self.refusal, other.refusal)
        if other.tools:
            if self.tools is None:
                self.tools = {}
            for index, fragment in other.tools.items():
                _add_fragment(self.tools, index, fragment)
        if other.logprobs is not None:
            self.logprobs = (self.logprobs or []) + other.logprobs
        if other.refusal_logprobs is not None:
            self.refusal_logprobs = (self.refusal_logprobs or []) + other.refusal_logprobs
        if other.extra:
            self.extra = {**(self.extra or {}), **other.extra}
        if other.delta_extra:
            self.delta_extra = {**(self.delta_extra or {}), **other.delta_extra}


_TOOL_KEYS = frozenset({"index", "id", "type", "function"})


def _fragment(entry: Any) -> list[Any]:
    """A streamed tool-call fragment: [id, type, name, argument pieces, unknown fields]."""
    fn = entry.get("function") or {}
    args = fn.get("arguments")
    if args is not None and type(args) is not str:
        args = answers.json_text(args)
    tid, kind, name = entry.get("id"), entry.get("type"), fn.get("name")
    return [None if tid is None else str(tid), None if kind is None else str(kind),
            None if name is None else str(name), None if args is None else [args],
            None if entry.keys() <= _TOOL_KEYS else answers.extra_of(entry, _TOOL_KEYS)]


def _add_fragment(tools: dict[int, list[Any]], index: int, fragment: list[Any]) -> None:
    """A later fragment of the same call: its arguments piece appended, first values kept."""
    mine = tools.get(index)
    if mine is None:
        tools[index] = fragment
        return
    for i in (0, 1, 2):
        if mine[i] is None:
            mine[i] = fragment[i]
    if fragment[3] is not None:
        mine[3] = fragment[3] if mine[3] is None else mine[3] + fragment[3]
    if fragment[4]:
        mine[4] = {**(mine[4] or {}), **fragment[4]}


def _tool_call(index: int, fragment: list[Any]) -> pb.ToolCall:
    tid, kind, name, pieces, extra = fragment
    t = pb.ToolCall(index=index)
    if tid is not None:
        t.id = tid
    if kind is not None:
        t.type = kind
    if name is not None or pieces is not None:
        t.function.SetInParent()
        if name is not None:
            t.function.name = name
        if pieces is not None:
            t.function.arguments = "".join(pieces)
    if extra:
        t.extra.update(extra)
    return t


def _rich(index: int, parts: Sequence[Delta | Rich]) -> Rich:
    """Plain and rich deltas of one choice, merged in order into one Rich."""
    if len(parts) == 1 and isinstance(parts[0], Rich):
        return parts[0]
    out = Rich(index)
    for p in parts:
        if isinstance(p, Rich):
            out.merge(p)
        else:
            if p[1] and not out.role:
                out.role = p[1]
            if p[2]:
                out.content = (out.content or []) + [p[2]]
            if p[3]:
                out.finish = p[3]
    return out


# One upstream event: its unknown top-level fields, its choices' deltas, and whether it is plain
# (no unknown fields, every delta a plain tuple).
_Event = tuple[dict[str, Any] | None, list[Delta | Rich], bool]


class _StreamState(Generic[ChunkT]):
    """Upstream stream events → typed chunks; the subclasses read a choice and build a chunk.

    The events of one network read become as few messages as merging allows (usually one): plain
    deltas are merged per choice as strings, and one chunk is built for them. The deltas that
    finish a choice are held back, to go out with the usage at the end.
    """

    __slots__ = ("content_chunks", "created", "held", "id", "model", "prompt_tokens", "tail_extra",
                 "usage")

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.id = ""
        self.created = 0
        self.content_chunks = 0
        self.usage: pb.Usage | None = None
        self.held: _Event | None = None
        # Unknown top-level fields of events without choices (a usage chunk's `timings`).
        self.tail_extra: dict[str, Any] | None = None

    def _first(self, data: Any) -> None:
        """What the first event says of the whole stream."""
        self.id = str(data.get("id") or "")
        self.created = int(data.get("created") or 0)

    def _delta(self, choice: Any) -> Delta | Rich:
        raise NotImplementedError

    def _build(self, deltas: Iterable[Delta]) -> ChunkT:
        raise NotImplementedError

    def _build_rich(self, choices: Iterable[Rich], extra: dict[str, Any] | None) -> ChunkT:
        raise NotImplementedError

    def _event(self, data: Any) -> _Event:
        try:
            if not self.id:
                self._first(data)
            usage = data.get("usage")
            if usage:
                self.usage = answers.usage_from_openai(usage)
            extra = None if data.keys() <= _TOP_KEYS else answers.extra_of(data, _TOP_KEYS)
            plain = extra is None
            deltas: list[Delta | Rich] = []
            for c in data.get("choices") or ():
                delta = self._delta(c)
                deltas.append(delta)
                if type(delta) is tuple:
                    if delta[2]:
                        self.content_chunks += 1
                else:
                    plain = False
                    if delta.has_text:  # type: ignore[union-attr]
                        self.content_chunks += 1
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError(
                "upstream sent a stream chunk the gateway cannot read", kind="protocol"
            ) from exc
        if not deltas and extra:
            self.tail_extra = {**(self.tail_extra or {}), **extra}
        return extra, deltas, plain

    def _merged(self, acc: _Merged) -> ChunkT:
        return self._build([(index, role, "".join(pieces), finish)
                            for index, (role, pieces, finish) in acc.items()])

    def feed(self, data: Any) -> list[ChunkT]:
        """One upstream event in; the chunks to forward now (none when held back or usage only)."""
        return self.feed_batch((data,))

    def feed_batch(self, events: Sequence[Any]) -> list[ChunkT]:
        """Upstream events that arrived in one read → the chunks to forward now (usually one)."""
        held_plain = self.held is None or self.held[2]
        if len(events) == 1:
            event = self._event(events[0])
            if not (event[2] and held_plain):
                return self._rich_batch([event])
            deltas: Any = event[1]
            if not deltas:
                return []
            if deltas[0][3] if len(deltas) == 1 else any(d[3] for d in deltas):
                previous, self.held = self.held, event
                return [self._build(previous[1])] if previous else []  # type: ignore[arg-type]
            return [self._build(deltas)]
        parsed = [self._event(data) for data in events]
        if not (held_plain and all(event[2] for event in parsed)):
            return self._rich_batch(parsed)
        acc: _Merged = {}
        for event in parsed:
            deltas = event[1]
            if not deltas:
                continue
            if any(d[3] for d in deltas):  # it finishes a choice: hold it, release the last held
                previous, self.held = self.held, event
                if previous:
                    _merge_deltas(acc, previous[1])  # type: ignore[arg-type]
            else:
                _merge_deltas(acc, deltas)
        return [self._merged(acc)] if acc else []

    @staticmethod
    def _group(deltas: list[Delta | Rich]) -> dict[int, Rich]:
        if len(deltas) == 1 and isinstance(deltas[0], Rich):
            return {deltas[0].index: deltas[0]}
        by_index: dict[int, list[Delta | Rich]] = {}
        for d in deltas:
            by_index.setdefault(d.index if isinstance(d, Rich) else d[0], []).append(d)
        return {i: _rich(i, parts) for i, parts in by_index.items()}

    def _rich_batch(self, parsed: list[_Event]) -> list[ChunkT]:
        out: list[ChunkT] = []
        acc: dict[int, Rich] = {}
        acc_extra: dict[str, Any] | None = None

        def add(extra: dict[str, Any] | None, deltas: list[Delta | Rich]) -> None:
            nonlocal acc, acc_extra
            grouped = self._group(deltas)
            if acc and (extra != acc_extra
                        or not all(r.mergeable for r in grouped.values())):
                out.append(self._build_rich(acc.values(), acc_extra))
                acc = {}
            acc_extra = extra
            for index, r in grouped.items():
                mine = acc.get(index)
                if mine is None:
                    acc[index] = r
                else:
                    mine.merge(r)
            if not all(r.mergeable for r in grouped.values()):
                out.append(self._build_rich(acc.values(), acc_extra))
                acc = {}

        for event in parsed:
            extra, deltas = event[0], event[1]
            if not deltas:
                continue
            if any((d.finish if isinstance(d, Rich) else d[3]) for d in deltas):
                previous, self.held = self.held, event
                if previous:
                    add(previous[0], previous[1])
            else:
                add(extra, deltas)
        if acc:
            out.append(self._build_rich(acc.values(), acc_extra))
        return out

    def final(self) -> ChunkT:
        """The last message: the held finishing deltas (if any) with the usage."""
        extra, deltas, _ = self.held or (None, [], True)
        if self.tail_extra:
            extra = {**(extra or {}), **self.tail_extra}
        if extra is None and all(type(d) is tuple for d in deltas):
            acc: _Merged = {}
            _merge_deltas(acc, deltas)  # type: ignore[arg-type]
            chunk = self._merged(acc)
        else:
            chunk = self._build_rich(self._group(deltas).values(), extra)
        chunk.usage.CopyFrom(self.usage or estimated_usage(self.prompt_tokens, self.content_chunks))
        return chunk


def _set_extra(target: Any, extra: dict[str, Any] | None) -> None:
    if extra:
        target.extra.update(extra)


class ChatStreamState(_StreamState[pb.ChatChunk]):
    """Upstream ``chat.completion.chunk`` events → ChatChunk messages."""

    __slots__ = ("fingerprint",)

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        super().__init__(model, prompt_tokens)
        self.fingerprint = ""

    def _first(self, data: Any) -> None:
        super()._first(data)
        self.fingerprint = str(data.get("system_fingerprint") or "")

    def _delta(self, choice: Any) -> Delta | Rich:
        delta = choice.get("delta") or {}
        content = delta.get("content")
        finish = choice.get("finish_reason") or ""
        if ((content is not None or finish) and delta.keys() <= _PLAIN_DELTA
                and choice.keys() <= _PLAIN_CHOICE and choice.get("logprobs") is None):
            role = delta.get("role") or ""
            if content is None:
                content = ""
            if type(content) is not str or type(role) is not str or type(finish) is not str:
                raise TypeError(_NOT_STRINGS)
            return int(choice.get("index") or 0), role, content, finish
        return self._rich_delta(choice, delta)

    @staticmethod
    def _rich_delta(choice: Any, delta: Any) -> Rich:
        r = Rich(int(choice.get("index") or 0))
        r.role = str(delta.get("role") or "")
        r.finish = str(choice.get("finish_reason") or "")
        for name in ("content", "reasoning_content", "reasoning", "refusal"):
            value = delta.get(name)
            if value is not None:
                if type(value) is not str:
                    raise TypeError(_NOT_STRINGS)
                setattr(r, name, [value])
        calls = delta.get("tool_calls")
        if calls:
            r.tools = {}
            for entry in calls:
                _add_fragment(r.tools, int(entry.get("index") or 0), _fragment(entry))
        if choice.get("logprobs") is not None:
            lp = answers.chat_logprobs(choice["logprobs"])
            if lp is not None:
                r.logprobs = list(lp.content)
                r.refusal_logprobs = list(lp.refusal)
        if not choice.keys() <= answers.CHOICE_KEYS:
            r.extra = answers.extra_of(choice, answers.CHOICE_KEYS)
        if not delta.keys() <= _DELTA_KEYS:
            r.delta_extra = answers.extra_of(delta, _DELTA_KEYS)
        return r

    def _build(self, deltas: Iterable[Delta]) -> pb.ChatChunk:
        chunk = pb.ChatChunk(id=self.id, created=self.created, model=self.model,
                             system_fingerprint=self.fingerprint, text_only=True)
        for index, role, content, finish in deltas:
            choice = chunk.choices.add(index=index)
            choice.delta.role = role
            if content or not finish:
                choice.delta.content = content
            if finish:
                choice.finish_reason = finish
        return chunk

    def _build_rich(self, choices: Iterable[Rich], extra: dict[str, Any] | None) -> pb.ChatChunk:
        chunk = pb.ChatChunk(id=self.id, created=self.created, model=self.model,
                             system_fingerprint=self.fingerprint)
        _set_extra(chunk, extra)
        for r in choices:
            choice = chunk.choices.add(index=r.index)
            d = choice.delta
            d.role = r.role
            if r.content is not None:
                d.content = "".join(r.content)
            if r.reasoning_content is not None:
                d.reasoning_content = "".join(r.reasoning_content)
            if r.reasoning is not None:
                d.reasoning = "".join(r.reasoning)
            if r.refusal is not None:
                d.refusal = "".join(r.refusal)
            if r.tools:
                d.tool_calls.extend(_tool_call(i, f) for i, f in r.tools.items())
            if r.logprobs is not None or r.refusal_logprobs is not None:
                choice.logprobs.SetInParent()
                choice.logprobs.content.extend(r.logprobs or ())
                choice.logprobs.refusal.extend(r.refusal_logprobs or ())
            if r.finish:
                choice.finish_reason = r.finish
            _set_extra(choice, r.extra)
            _set_extra(d, r.delta_extra)
        return chunk


class CompletionStreamState(_StreamState[pb.CompletionChunk]):
    """Upstream ``text_completion`` stream events → CompletionChunk messages."""

    __slots__ = ()

    def _delta(self, choice: Any) -> Delta | Rich:
        text = choice.get("text") or ""
        finish = choice.get("finish_reason") or ""
        if type(text) is not str or type(finish) is not str:
            raise TypeError(_NOT_STRINGS)
        index = int(choice.get("index") or 0)
        if choice.keys() <= _PLAIN_CHOICE and choice.get("logprobs") is None:
            return index, "", text, finish
        r = Rich(index)
        r.finish = finish
        r.content = [text]
        lp = answers.completion_logprobs(choice.get("logprobs"))
        if lp is not None:
            r.logprobs = list(lp.tokens)
        if not choice.keys() <= answers.CHOICE_KEYS:
            r.extra = answers.extra_of(choice, answers.CHOICE_KEYS)
        return r

    def _build(self, deltas: Iterable[Delta]) -> pb.CompletionChunk:
        chunk = pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
        for index, _, text, finish in deltas:
            chunk.choices.add(index=index, text=text, finish_reason=finish)
        return chunk

    def _build_rich(self, choices: Iterable[Rich], extra: dict[str, Any] | None
                    ) -> pb.CompletionChunk:
        chunk = pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
        _set_extra(chunk, extra)
        for r in choices:
            choice = chunk.choices.add(index=r.index, text="".join(r.content or ()),
                                       finish_reason=r.finish)
            if r.logprobs is not None:
                choice.logprobs.tokens.extend(r.logprobs)
            _set_extra(choice, r.extra)
        return chunk
