"""Unary answers assembled from streams: a non-streaming chat or completion request is streamed
from an OpenAI-compatible upstream (``options.unary_via_stream``, on by default) and put together
here, so that what holds for streams holds for it too: retries before the first token, the
``first_token`` and ``idle`` stage timeouts, and a caller that leaves stopping the generation (a
server notices a closed connection when it writes the next token; a non-streaming request keeps
generating until the whole answer is done).

The answer is put together the way OpenAI's clients accumulate a stream: text pieces joined per
choice, tool-call fragments joined per call ``index``, log-probability entries appended, the
fields the API does not type merged (later values win), the usage of the final chunk. What it
holds is bounded as an answer read whole is: by the model's ``max_response_bytes`` and the
gateway's budget of buffered answers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from gateway_core.errors import UpstreamError
from gateway_core.providers.base import Call
from gateway_core.providers.http import too_large
from inference_gateway.v1 import inference_pb2 as pb

# Request fields a stream does not answer (vLLM's prompt log-probabilities, its disaggregated
# prefill parameters): a request that asks for them goes to the upstream as it is.
UNARY_ONLY = ("prompt_logprobs", "kv_transfer_params")


def wants_unary(extra: object) -> bool:
    """Whether a request's pass-through fields ask for what only a non-streaming answer has."""
    fields = getattr(extra, "fields", None)
    return bool(fields) and any(k in fields for k in UNARY_ONLY)  # type: ignore[operator]


class _ChatChoice:
    __slots__ = ("arguments", "calls", "choice", "content", "reasoning", "reasoning_content",
                 "refusal")

    def __init__(self, choice: pb.ChatChoice) -> None:
        self.choice = choice
        self.content: list[str] = []
        self.refusal: list[str] | None = None
        self.reasoning_content: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.calls: dict[int, pb.ToolCall] = {}
        self.arguments: dict[int, list[str]] = {}


def _held(call: Call, size: int, chunk: pb.ChatChunk | pb.CompletionChunk) -> int:
    """``size`` plus the chunk's, checked against the model's bound and held in the budget."""
    n = chunk.ByteSize()
    size += n
    if size > call.max_response_bytes:
        raise too_large(call.max_response_bytes)
    call.hold(n)
    return size


async def chat_from_stream(stream: AsyncGenerator[pb.ChatChunk, None], call: Call
                           ) -> pb.ChatResponse:
    """The ChatResponse a stream of ChatChunks adds up to (see the module's docstring)."""
    resp = pb.ChatResponse()
    choices: dict[int, _ChatChoice] = {}
    size = 0
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            size = _held(call, size, chunk)
            if not resp.id and chunk.id:
                resp.id = chunk.id
            if not resp.created and chunk.created:
                resp.created = chunk.created
            if not resp.model and chunk.model:
                resp.model = chunk.model
            if chunk.system_fingerprint:
                resp.system_fingerprint = chunk.system_fingerprint
            if chunk.HasField("extra"):
                resp.extra.MergeFrom(chunk.extra)
            if chunk.HasField("usage"):
                resp.usage.CopyFrom(chunk.usage)
            for c in chunk.choices:
                acc = choices.get(c.index)
                if acc is None:
                    acc = choices[c.index] = _ChatChoice(pb.ChatChoice(index=c.index))
                    acc.choice.message.role = "assistant"
                choice = acc.choice
                d = c.delta
                if d.role:
                    choice.message.role = d.role
                if d.content:
                    acc.content.append(d.content)
                if d.HasField("refusal"):
                    (acc.refusal if acc.refusal is not None else _new(acc, "refusal")).append(d.refusal)
                if d.HasField("reasoning_content"):
                    (acc.reasoning_content if acc.reasoning_content is not None
                     else _new(acc, "reasoning_content")).append(d.reasoning_content)
                if d.HasField("reasoning"):
                    (acc.reasoning if acc.reasoning is not None
                     else _new(acc, "reasoning")).append(d.reasoning)
                for t in d.tool_calls:
                    tc = acc.calls.get(t.index)
                    if tc is None:
                        tc = acc.calls[t.index] = pb.ToolCall(index=t.index)
                        acc.arguments[t.index] = []
                    if t.HasField("id") and not tc.HasField("id"):
                        tc.id = t.id
                    if t.HasField("type") and not tc.HasField("type"):
                        tc.type = t.type
                    f = t.function
                    if f.HasField("name") and not tc.function.HasField("name"):
                        tc.function.name = f.name
                    if f.HasField("arguments"):
                        acc.arguments[t.index].append(f.arguments)
                    if t.HasField("extra"):
                        tc.extra.MergeFrom(t.extra)
                if d.HasField("extra"):
                    choice.message.extra.MergeFrom(d.extra)
                if c.finish_reason:
                    choice.finish_reason = c.finish_reason
                if c.HasField("logprobs"):
                    choice.logprobs.content.extend(c.logprobs.content)
                    choice.logprobs.refusal.extend(c.logprobs.refusal)
                if c.HasField("extra"):
                    choice.extra.MergeFrom(c.extra)
    if not choices:
        raise UpstreamError("upstream ended the stream without any choice", kind="protocol")
    for index in sorted(choices):
        acc = choices[index]
        message = acc.choice.message
        text = "".join(acc.content)
        # As a unary answer has it: null content for a message that only calls tools or refuses.
        if text or (not acc.calls and acc.refusal is None):
            message.content = text
        if acc.refusal is not None:
            message.refusal = "".join(acc.refusal)
        if acc.reasoning_content is not None:
            message.reasoning_content = "".join(acc.reasoning_content)
        if acc.reasoning is not None:
            message.reasoning = "".join(acc.reasoning)
        for i in sorted(acc.calls):
            tc = acc.calls[i]
            if acc.arguments[i]:
                tc.function.arguments = "".join(acc.arguments[i])
            tc.ClearField("index")  # a unary answer's calls show no index
            message.tool_calls.append(tc)
        resp.choices.append(acc.choice)
    return resp


def _new(acc: _ChatChoice, name: str) -> list[str]:
    pieces: list[str] = []
    setattr(acc, name, pieces)
    return pieces


async def completion_from_stream(stream: AsyncGenerator[pb.CompletionChunk, None], call: Call
                                 ) -> pb.CompletionResponse:
    """The CompletionResponse a stream of CompletionChunks adds up to."""
    resp = pb.CompletionResponse()
    texts: dict[int, list[str]] = {}
    choices: dict[int, pb.CompletionChoice] = {}
    size = 0
    async with aclosing(stream) as chunks:
        async for chunk in chunks:
            size = _held(call, size, chunk)
            if not resp.id and chunk.id:
                resp.id = chunk.id
            if not resp.created and chunk.created:
                resp.created = chunk.created
            if not resp.model and chunk.model:
                resp.model = chunk.model
            if chunk.system_fingerprint:
                resp.system_fingerprint = chunk.system_fingerprint
            if chunk.HasField("extra"):
                resp.extra.MergeFrom(chunk.extra)
            if chunk.HasField("usage"):
                resp.usage.CopyFrom(chunk.usage)
            for c in chunk.choices:
                choice = choices.get(c.index)
                if choice is None:
                    choice = choices[c.index] = pb.CompletionChoice(index=c.index)
                    texts[c.index] = []
                if c.text:
                    texts[c.index].append(c.text)
                if c.finish_reason:
                    choice.finish_reason = c.finish_reason
                if c.HasField("logprobs"):
                    choice.logprobs.tokens.extend(c.logprobs.tokens)
                if c.HasField("extra"):
                    choice.extra.MergeFrom(c.extra)
    if not choices:
        raise UpstreamError("upstream ended the stream without any choice", kind="protocol")
    for index in sorted(choices):
        choice = choices[index]
        choice.text = "".join(texts[index])
        resp.choices.append(choice)
    return resp
