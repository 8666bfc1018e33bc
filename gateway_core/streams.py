"""Per-request stream state: upstream OpenAI-format chunks → typed chunks.

The core's streams end with one message that carries usage and the finish reason, so the state holds
back the chunk that finishes the last choice and sends it with the usage once the upstream is done.
When the upstream reports no usage, completion tokens are counted as content-bearing chunks (servers
stream one token per chunk) and the usage is flagged as estimated.

Events that arrived in one network read go on as one message where that loses nothing, merged the
way OpenAI's clients accumulate a stream: text pieces joined per choice, tool-call fragments joined
per call ``index``, log-probability entries appended. Plain text deltas and plain tool-call
fragments take a fast path, and the chunks built from them carry a ``shape``. An event
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

# One plain upstream choice delta: (index, role, content, finish_reason, tool-call fragment or
# None); completions have no role. A fragment: (call index, id, type, name, arguments), None for
# what it does not carry.
Fragment = tuple[int, str | None, str | None, str | None, str | None]
Delta = tuple[int, str, str, str, Fragment | None]
# Deltas merged per choice index, in order of first appearance: index → [role, pieces, finish,
# calls], calls being None or call index → [id, type, name, argument pieces].
_Merged = dict[int, list[Any]]

ChunkT = TypeVar("ChunkT", pb.ChatChunk, pb.CompletionChunk)

_TOP_KEYS = answers.TOP_KEYS
_KNOWN_TOP = _TOP_KEYS.issuperset  # cheaper than comparing a keys view
_PLAIN_CHOICE = frozenset({"index", "delta", "text", "finish_reason", "logprobs"})
_DELTA_KEYS = frozenset({"role", "content", "tool_calls", "refusal", "reasoning_content",
                         "reasoning"})
_NOT_STRINGS = "a choice's content, role and finish_reason are strings"
_TOOL_KEYS_OK = frozenset({"index", "id", "type", "function"}).issuperset
_FUNCTION_KEYS_OK = frozenset({"name", "arguments"}).issuperset
_TEXT = pb.ChatChunk.SHAPE_TEXT
_TOOL_FRAGMENTS = pb.ChatChunk.SHAPE_TOOL_FRAGMENTS


def _merge_deltas(acc: _Merged, deltas: Iterable[Delta]) -> None:
    for index, role, content, finish, fragment in deltas:
        entry = acc.get(index)
        if entry is None:
            entry = acc[index] = [role, [content], finish, None]
        else:
            if role and not entry[0]:
                entry[0] = role
            entry[1].append(content)
            if finish:
                entry[2] = finish
        if fragment is not None:
            if entry[3] is None:
                entry[3] = {}
            _add_call(entry[3], fragment)


def _add_call(calls: dict[int, list[Any]], fragment: Fragment) -> None:
    """A tool-call fragment joined to its call: first id, type and name kept, arguments appended."""
    call_index, tid, kind, name, args = fragment
    call = calls.get(call_index)
    if call is None:
        calls[call_index] = [tid, kind, name, None if args is None else [args]]
        return
    if call[0] is None:
        call[0] = tid
    if call[1] is None:
        call[1] = kind
    if call[2] is None:
        call[2] = name
    if args is not None:
        if call[3] is None:
            call[3] = [args]
        else:
            call[3].append(args)


def _plain_fragment(calls: Any) -> Fragment | None:
    """The one tool-call fragment of a delta, when it is plain (index, id, type, a function with
    name and string arguments, nothing else); None when the delta needs the general path."""
    if type(calls) is not list or len(calls) != 1:
        return None
    call = calls[0]
    fn = call.get("function")
    if type(fn) is not dict:
        return None
    if len(call) == 2 and len(fn) == 1 and "index" in call:  # a later piece: index, arguments
        args, index = fn.get("arguments"), call["index"]
        if type(args) is str and type(index) is int:
            return index, None, None, None, args
    if not _TOOL_KEYS_OK(call) or not _FUNCTION_KEYS_OK(fn):
        return None
    tid, kind, name, args = call.get("id"), call.get("type"), fn.get("name"), fn.get("arguments")
    if not (tid is None or type(tid) is str) or not (kind is None or type(kind) is str) \
            or not (name is None or type(name) is str) or not (args is None or type(args) is str):
        return None
    index = call.get("index") or 0
    if type(index) is not int:
        return None
    return index, tid, kind, name, args


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
            if p[4] is not None:
                if out.tools is None:
                    out.tools = {}
                f = p[4]
                _add_fragment(out.tools, f[0], [f[1], f[2], f[3],
                                                None if f[4] is None else [f[4]], None])
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

    def _build(self, deltas: Iterable[Any]) -> ChunkT:
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
            extra = None if _KNOWN_TOP(data) else answers.extra_of(data, _TOP_KEYS)
            plain = extra is None
            deltas: list[Delta | Rich] = []
            for c in data.get("choices") or ():
                delta = self._delta(c)
                deltas.append(delta)
                if type(delta) is tuple:
                    if delta[2] or delta[4]:
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
        return self._build([(index, role, "".join(pieces), finish, calls)
                            for index, (role, pieces, finish, calls) in acc.items()])

    def _build_one(self, deltas: list[Delta]) -> ChunkT:
        """The chunk of one event's plain deltas (a fragment as a call of its own)."""
        if deltas[0][4] is not None if len(deltas) == 1 else any(d[4] is not None
                                                                   for d in deltas):
            acc: _Merged = {}
            _merge_deltas(acc, deltas)
            return self._merged(acc)
        return self._build(deltas)

    def feed(self, data: Any) -> list[ChunkT]:
        """One upstream event in; the chunks to forward now (none when held back or usage only)."""
        return self.feed_batch((data,))

    def feed_batch(self, events: Sequence[Any]) -> list[ChunkT]:
        """Upstream events that arrived in one read → the chunks to forward now (usually one)."""
        if len(events) == 1:
            event = self._event(events[0])
            if not (event[2] and (self.held is None or self.held[2])):
                return self._rich_batch([event])
            deltas: Any = event[1]
            if not deltas:
                return []
            if deltas[0][3] if len(deltas) == 1 else any(d[3] for d in deltas):
                previous, self.held = self.held, event
                return [self._build_one(previous[1])] if previous else []  # type: ignore[arg-type]
            return [self._build_one(deltas)]
        # Plain events are merged as they come; from the first that is not (or while a rich
        # event is held), the rest of the read goes the general way, after what came before.
        acc: _Merged = {}
        rest: list[_Event] = []
        for data in events:
            event = self._event(data)
            if rest or not event[2] or not (self.held is None or self.held[2]):
                rest.append(event)
                continue
            deltas = event[1]
            if not deltas:
                continue
            if deltas[0][3] if len(deltas) == 1 else any(d[3] for d in deltas):
                # It finishes a choice: hold it, release the last held.
                previous, self.held = self.held, event
                if previous:
                    _merge_deltas(acc, previous[1])  # type: ignore[arg-type]
            else:
                _merge_deltas(acc, deltas)
        out = [self._merged(acc)] if acc else []
        if rest:
            out.extend(self._rich_batch(rest))
        return out

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
        """The last message: the held finishing deltas with the usage. A stream that ended with
        no choice finished (empty, or cut short without ``[DONE]``'s finish reason) failed:
        it must not reach the caller as a clean end."""
        if self.held is None:
            raise UpstreamError(
                "upstream ended the stream before any choice finished" if self.content_chunks
                else "upstream ended the stream without any content or finish reason",
                kind="protocol")
        extra, deltas, _ = self.held
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

    __slots__ = ("_template", "_template_id", "fingerprint")

    def __init__(self, model: str, prompt_tokens: int | Callable[[], int]) -> None:
        super().__init__(model, prompt_tokens)
        self.fingerprint = ""
        self._template: pb.ChatChunk | None = None
        self._template_id = ""

    def _first(self, data: Any) -> None:
        super()._first(data)
        self.fingerprint = str(data.get("system_fingerprint") or "")

    def _delta(self, choice: Any) -> Delta | Rich:
        delta = choice.get("delta") or {}
        content = delta.get("content")
        finish = choice.get("finish_reason") or ""
        # Plain: the delta holds role and content only, the choice index, delta, finish_reason
        # and a null logprobs only (counted with `in`: cheaper than comparing key sets).
        if ((content is not None or finish)
                and len(delta) == ("content" in delta) + ("role" in delta)
                and len(choice) == 1 + ("index" in choice) + ("finish_reason" in choice)
                + ("logprobs" in choice and choice["logprobs"] is None)):
            role = delta.get("role") or ""
            if content is None:
                content = ""
            if type(content) is not str or type(role) is not str or type(finish) is not str:
                raise TypeError(_NOT_STRINGS)
            return int(choice.get("index") or 0), role, content, finish, None
        if (not content and (calls := delta.get("tool_calls"))
                and len(delta) == 1 + ("content" in delta) + ("role" in delta)
                and len(choice) == 1 + ("index" in choice) + ("finish_reason" in choice)
                + ("logprobs" in choice and choice["logprobs"] is None)
                and (fragment := _plain_fragment(calls)) is not None):
            role = delta.get("role") or ""
            if type(role) is not str or type(finish) is not str:
                raise TypeError(_NOT_STRINGS)
            return int(choice.get("index") or 0), role, "", finish, fragment
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

    def _head(self) -> pb.ChatChunk:
        """The fields every chunk of the stream shares, built once: copying them into each chunk
        costs a third less than setting them one by one."""
        if self._template is None or self._template_id is not self.id:  # the first, or ids came late
            self._template = pb.ChatChunk(id=self.id, created=self.created, model=self.model,
                                          system_fingerprint=self.fingerprint)
            self._template_id = self.id
        chunk = pb.ChatChunk()
        chunk.CopyFrom(self._template)
        return chunk

    def _build(self, deltas: Iterable[Any]) -> pb.ChatChunk:
        """A chunk of plain deltas: (index, role, content, finish, None or call index →
        [id, type, name, argument pieces])."""
        chunk = self._head()
        shape: int | None = _TEXT  # None: neither shape
        for index, role, content, finish, calls in deltas:
            choice = chunk.choices.add()
            if index:
                choice.index = index
            if role:
                choice.delta.role = role
            if calls:
                shape = _TOOL_FRAGMENTS if shape is not None else None
                if content:
                    choice.delta.content = content
                    shape = None
                tool_calls = choice.delta.tool_calls
                for call_index, (tid, kind, name, pieces) in calls.items():
                    t = tool_calls.add(index=call_index)
                    if tid is not None:
                        t.id = tid
                    if kind is not None:
                        t.type = kind
                    fn = t.function
                    if name is not None:
                        fn.name = name
                    fn.arguments = "".join(pieces) if pieces else ""
            else:
                if shape == _TOOL_FRAGMENTS:
                    shape = None
                if content or not finish:
                    choice.delta.content = content
            if finish:
                choice.finish_reason = finish
        if shape is not None:
            chunk.shape = shape  # type: ignore[assignment]
        return chunk

    def _build_rich(self, choices: Iterable[Rich], extra: dict[str, Any] | None) -> pb.ChatChunk:
        chunk = self._head()
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
            return index, "", text, finish, None
        r = Rich(index)
        r.finish = finish
        r.content = [text]
        lp = answers.completion_logprobs(choice.get("logprobs"))
        if lp is not None:
            r.logprobs = list(lp.tokens)
        if not choice.keys() <= answers.CHOICE_KEYS:
            r.extra = answers.extra_of(choice, answers.CHOICE_KEYS)
        return r

    def _build(self, deltas: Iterable[Any]) -> pb.CompletionChunk:
        chunk = pb.CompletionChunk(id=self.id, created=self.created, model=self.model)
        for index, _, text, finish, _calls in deltas:
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
