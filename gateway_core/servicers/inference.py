"""The Inference servicer: decode, route to the model's provider, return. Nothing else.

Deadline rule: a gRPC caller's own deadline is the request's deadline. When the caller set none, or
the edge marks its deadline as a fallback (metadata ``igw-default-deadline``), the model's timeout
(or the gateway default) applies, bounded by whatever the caller did set.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from grpc import aio

from gateway_common import tracing
from gateway_common.asyncgen import delegate
from gateway_common.budget import ByteBudget
from gateway_common.config import PRIORITIES, LimitsConfig
from gateway_common.core_api import (
    DEFAULT_DEADLINE_KEY,
    END_USER_LOG_KEY,
    ENDPOINT_KEY,
    ENDPOINT_LOG_KEY,
    GENERATE_KEY,
    MODEL_KEY,
    PRIORITY_KEY,
    REQUEST_ID_KEY,
    TOKEN_LOG_KEY,
    UPSTREAM_SECONDS_KEY,
    USAGE_LOG_KEY,
)
from gateway_core import audio, templates
from gateway_core.auth.identity import current_identity
from gateway_core.errors import GatewayError, InvalidRequest, PayloadTooLarge
from gateway_core.interceptors import current_model, current_request_id
from gateway_core.limits.limiter import Limiter
from gateway_core.providers.base import Call, Provider
from gateway_core.registry import ModelEntry, ModelRegistry
from gateway_core.traffic.admission import RANK
from gateway_core.traffic.assemble import chat_from_stream, completion_from_stream, wants_unary
from gateway_core.traffic.chat import ChatResumer
from gateway_core.traffic.router import Route
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc

Ctx = aio.ServicerContext[Any, Any]
T = TypeVar("T")



def endpoint_of(context: Ctx) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == ENDPOINT_KEY:
            return str(value)
    return None


def generate_of(context: Ctx) -> bool:
    return any(key == GENERATE_KEY for key, _ in context.invocation_metadata() or ())


def check_prompt(chars: int, limit: int) -> None:
    if chars > limit:
        raise PayloadTooLarge(f"the prompt is {chars} characters long; the limit is {limit}")


def check_texts(texts: Iterable[str], limit: int, *, extra: int = 0) -> None:
    """The one input bound of every task: the texts' characters together, as for a prompt (plus
    ``extra``: the size of model-specific fields, which may carry the text too)."""
    chars = sum(len(t) for t in texts) + extra
    if chars > limit:
        raise PayloadTooLarge(f"the input is {chars} characters long; the limit is {limit}")


def check_messages(request: pb.ChatRequest, limit: int) -> None:
    if not request.messages:
        raise InvalidRequest("'messages' must hold at least one message")
    chars = 0
    for m in request.messages:
        chars += len(m.content) + sum(len(p.text) for p in m.parts)
    check_prompt(chars, limit)


def make_call(context: Ctx, entry: ModelEntry, budget: ByteBudget | None = None) -> Call:
    """The provider's view of this request; what it buffers is counted against ``budget`` until
    the RPC ends (its answer sent)."""
    request_id = ""
    fallback = False
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY:
            request_id = str(value)
        elif key == DEFAULT_DEADLINE_KEY:
            fallback = True
    current_request_id.set(request_id)
    remaining: float | None = context.time_remaining()  # None: the caller set no deadline
    if remaining is None:
        seconds = entry.timeout
    elif fallback:
        seconds = min(remaining, entry.timeout)
    else:
        seconds = remaining
    call = Call(deadline=asyncio.get_running_loop().time() + seconds, request_id=request_id,
                max_response_bytes=entry.config.max_response_bytes, budget=budget)
    if budget is not None:
        # (the stubs type the callback as a class of their own; any callable is accepted)
        context.add_done_callback(lambda _ctx: call.release())  # type: ignore[arg-type]
    return call


def priority_of(context: Ctx) -> str:
    """The request's class: the one it asks for (``igw-priority``), never above its token's
    (``standard`` unless the token says otherwise; any class when auth is off)."""
    asked = None
    for key, value in context.invocation_metadata() or ():
        if key == PRIORITY_KEY:
            asked = str(value)
    identity = current_identity.get()
    allowed = getattr(identity, "priority", "standard") if identity is not None else "critical"
    if asked not in RANK:
        if asked is not None:
            raise InvalidRequest(f"the priority must be one of {', '.join(PRIORITIES)}")
        return allowed if allowed != "critical" else "standard"
    return asked if RANK[asked] >= RANK[allowed] else allowed



def chat_key(entry: ModelEntry, request: pb.ChatRequest) -> str | None:
    """The start of the rendered prompt, for prefix_affinity (None for other balancers)."""
    if entry.config.balance != "prefix_affinity":
        return None
    limit = entry.config.prefix_chars
    parts: list[str] = []
    size = 0
    for m in request.messages:
        text = m.content or "".join(p.text for p in m.parts)
        parts.append(f"{m.role}:{text}\n")
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


def completion_key(entry: ModelEntry, prompt: str) -> str | None:
    return prompt[:entry.config.prefix_chars] if entry.config.balance == "prefix_affinity" \
        else None


def chat_committed(chunk: pb.ChatChunk) -> bool:
    """Whether the chunk carries content (past the role-only preamble): from here on the stream
    cannot move to another endpoint."""
    if chunk.HasField("usage"):
        return True
    for c in chunk.choices:
        d = c.delta
        if d.content or d.tool_calls or c.finish_reason or d.HasField("refusal") \
                or d.reasoning_content or d.reasoning or c.HasField("logprobs") \
                or d.HasField("extra") or c.HasField("extra"):
            return True
    return False


def completion_committed(chunk: pb.CompletionChunk) -> bool:
    return chunk.HasField("usage") or any(c.text or c.finish_reason for c in chunk.choices)


def via_stream(entry: ModelEntry, extra: Any) -> bool:
    """Whether a unary request is streamed from the upstream and assembled (every pool of the
    model's chain can, and the request asks for nothing only a unary answer has)."""
    for pool in entry.chain:
        if not pool.via_stream:
            return False
    return not wants_unary(extra)


# GenAI semantic conventions' operation names, where they have one.
TASK_OF_MODEL_CALL = {"completion": "text_completion", "embedding": "embeddings"}


def _traceparent(context: Ctx) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == tracing.TRACEPARENT:
            return str(value)
    return None


def _report(context: Ctx, call: Call, route: Route) -> None:
    logged = _for_the_log(route)
    failure = sys.exc_info()[1]  # (called from a finally block: the exception on its way out)
    if isinstance(failure, GatewayError):
        failure.extra = (*failure.extra, *logged)  # an abort's trailers replace these below
    context.set_trailing_metadata(((MODEL_KEY, current_model.get()),
                                   (UPSTREAM_SECONDS_KEY, f"{call.upstream_seconds:.6f}"),
                                   *route.metadata(), *logged))
    if route.span is not None:
        usage = dict(logged).get(USAGE_LOG_KEY, "")
        prompt, _, completion = usage.partition(",")
        tracing.end(route.span, failure, gen_ai__response__model=route.served,
                    gen_ai__usage__input_tokens=int(prompt) if prompt else None,
                    gen_ai__usage__output_tokens=int(completion) if completion else None,
                    gateway__attempts=route.attempts)


def _for_the_log(route: Route) -> tuple[tuple[str, str], ...]:
    """What the access log notes and the answer does not carry (see core_api)."""
    out: list[tuple[str, str]] = []
    if route.tried:
        out.append((ENDPOINT_LOG_KEY, route.tried[-1].label))
    identity = current_identity.get()
    if identity is not None:
        out.append((TOKEN_LOG_KEY, identity.token_id))
    if route.end_user:
        out.append((END_USER_LOG_KEY, route.end_user))
    usage = route.usage
    if usage is None and route.tail is not None and route.tail.HasField("usage"):
        usage = route.tail.usage
    if usage is not None:
        out.append((USAGE_LOG_KEY, f"{usage.prompt_tokens},{usage.completion_tokens}"))
    return tuple(out)


class InferenceServicer(pb_grpc.InferenceServicer):
    """Serves every task by handing the typed request to the model's provider."""

    def __init__(self, registry: ModelRegistry, limits: LimitsConfig | None = None,
                 buffers: ByteBudget | None = None, limiter: Limiter | None = None) -> None:
        self.registry = registry
        # Rate limits and budgets (None: nothing is limited).
        self.limiter = limiter
        limits = limits or LimitsConfig()
        self.max_prompt_chars = limits.max_prompt_chars
        self.max_upload_bytes = limits.max_upload_bytes
        # Upstream answers read whole, process-wide (one servicer serves both transports).
        self.buffers = buffers or ByteBudget(limits.max_buffered_bytes)
        self.templates = templates.TemplateRenderer(limits.max_template_bytes,
                                                    limits.template_timeout_seconds)

    async def _templated(self, request: pb.ChatRequest) -> pb.CompletionRequest:
        """A chat with a custom template becomes a completion of the rendered prompt."""
        prompt = await self.templates.render(
            request.chat_template, templates.messages_for_template(request.messages))
        check_prompt(len(prompt), self.max_prompt_chars)
        return templates.completion_request(request, prompt)

    def _route(self, model: str, task: str, context: Ctx) -> tuple[ModelEntry, Call]:
        entry = self.registry.resolve(model, task, endpoint_of(context),
                                      generate=task == "completion" and generate_of(context))
        current_model.set(entry.id)
        # The model the name resolved to, for the caller's labels (the edge keeps no name map).
        context.set_trailing_metadata(((MODEL_KEY, entry.id),))
        return entry, make_call(context, entry, self.buffers)

    def _way(self, entry: ModelEntry, call: Call, context: Ctx, key: str | None = None, *,
             request: Any = None, sized: bool = True) -> Route:
        """The request's way through its model's pool, within its limits (estimated from the
        request's size when ``sized``; an upload's bytes are no prompt)."""
        identity = current_identity.get()
        size = request.ByteSize if request is not None and sized else int
        gate = None if self.limiter is None else self.limiter.gate(
            entry.id, entry.config.limits, identity, size)
        route = Route(entry.chain, call, priority=priority_of(context),
                      tenant=identity.token_id if identity is not None else "", key=key,
                      gate=gate)
        end_user = getattr(request, "end_user", "") if request is not None else ""
        if end_user:
            route.end_user = end_user[:128]
        if tracing.enabled():
            task = TASK_OF_MODEL_CALL.get(entry.config.task, entry.config.task)
            route.span = tracing.start(
                f"{task} {entry.id}", _traceparent(context), "SERVER",
                {"gen_ai.operation.name": task, "gen_ai.request.model": entry.id,
                 "gen_ai.system": entry.config.provider})
        return route

    async def _unary(self, model: str, task: str, context: Ctx,
                     fn: Callable[[Provider, Call], Awaitable[T]],
                     check: Callable[[ModelEntry], None] | None = None) -> T:
        """Route a unary request of ``task`` through the model's pool: ``fn(provider, call)``
        makes one attempt."""
        entry, call = self._route(model, task, context)
        if check is not None:
            check(entry)
        route = self._way(entry, call, context)
        try:
            return await route.unary(fn)
        finally:
            _report(context, call, route)

    async def Chat(self, request: pb.ChatRequest, context: Ctx) -> pb.ChatResponse:
        entry, call = self._route(request.model, "chat", context)
        check_messages(request, self.max_prompt_chars)
        route = self._way(entry, call, context, chat_key(entry, request),
                          request=request)
        try:
            if request.chat_template:
                completion = await self._templated(request)
                if via_stream(entry, completion.extra):
                    answer = await completion_from_stream(route.stream(
                        lambda p, c: p.complete_stream(completion, c), completion_committed), call)
                else:
                    answer = await route.unary(lambda p, c: p.complete(completion, c))
                return templates.chat_response(answer)
            if via_stream(entry, request.extra):
                if entry.config.resume_streams and request.params.n <= 1:
                    route.resumer = ChatResumer(request)
                return await chat_from_stream(route.stream(
                    lambda p, c: p.chat_stream(request, c), chat_committed), call)
            return await route.unary(lambda p, c: p.chat(request, c))
        finally:
            _report(context, call, route)

    async def ChatStream(
        self, request: pb.ChatRequest, context: Ctx
    ) -> AsyncIterator[pb.ChatChunk]:
        entry, call = self._route(request.model, "chat", context)
        check_messages(request, self.max_prompt_chars)
        route = self._way(entry, call, context, chat_key(entry, request),
                          request=request)
        first = True
        try:
            if request.chat_template:
                completion = await self._templated(request)
                async with delegate(route.stream(lambda p, c: p.complete_stream(completion, c),
                                                 completion_committed)) as pieces:
                    async for piece in pieces:
                        if first:
                            await context.send_initial_metadata(route.metadata())
                        yield templates.chat_chunk(piece, first)
                        first = False
            else:
                if entry.config.resume_streams and request.params.n <= 1:
                    route.resumer = ChatResumer(request)
                async with delegate(route.stream(lambda p, c: p.chat_stream(request, c),
                                                 chat_committed)) as chunks:
                    async for chunk in chunks:
                        if first:
                            await context.send_initial_metadata(route.metadata())
                            first = False
                        yield chunk
        finally:
            _report(context, call, route)

    async def Complete(self, request: pb.CompletionRequest, context: Ctx) -> pb.CompletionResponse:
        entry, call = self._route(request.model, "completion", context)
        check_prompt(len(request.prompt), self.max_prompt_chars)
        route = self._way(entry, call, context, completion_key(entry, request.prompt),
                          request=request)
        try:
            if via_stream(entry, request.extra):
                return await completion_from_stream(route.stream(
                    lambda p, c: p.complete_stream(request, c), completion_committed), call)
            return await route.unary(lambda p, c: p.complete(request, c))
        finally:
            _report(context, call, route)

    async def CompleteStream(
        self, request: pb.CompletionRequest, context: Ctx
    ) -> AsyncIterator[pb.CompletionChunk]:
        entry, call = self._route(request.model, "completion", context)
        check_prompt(len(request.prompt), self.max_prompt_chars)
        route = self._way(entry, call, context, completion_key(entry, request.prompt),
                          request=request)
        first = True
        try:
            async with delegate(route.stream(lambda p, c: p.complete_stream(request, c),
                                             completion_committed)) as chunks:
                async for chunk in chunks:
                    if first:
                        await context.send_initial_metadata(route.metadata())
                        first = False
                    yield chunk
        finally:
            _report(context, call, route)

    async def Embed(self, request: pb.EmbedRequest, context: Ctx) -> pb.EmbedResponse:
        entry, call = self._route(request.model, "embedding", context)
        if not request.inputs:
            raise InvalidRequest("'input' must hold at least one text")
        check_texts(request.inputs, self.max_prompt_chars)
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.embed(request, c))
        finally:
            _report(context, call, route)

    async def Rerank(self, request: pb.RerankRequest, context: Ctx) -> pb.RerankResponse:
        entry, call = self._route(request.model, "rerank", context)
        if not request.texts:
            raise InvalidRequest("'texts' must hold at least one text")
        check_texts((request.query, *request.texts), self.max_prompt_chars)
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.rerank(request, c))
        finally:
            _report(context, call, route)

    async def Classify(self, request: pb.ClassifyRequest, context: Ctx) -> pb.ClassifyResponse:
        entry, call = self._route(request.model, "classification", context)
        if not request.inputs:
            raise InvalidRequest("'inputs' must hold at least one text")
        check_texts(request.inputs, self.max_prompt_chars)
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.classify(request, c))
        finally:
            _report(context, call, route)

    async def Transcribe(
        self, request: pb.TranscribeRequest, context: Ctx
    ) -> pb.TranscribeResponse:
        entry, call = self._route(request.model, "transcription", context)
        # One read of the audio, handed to the provider (upb copies a bytes field on every read;
        # ByteSize and ListFields would serialise or copy it too).
        audio_bytes = request.audio
        request.mime_type = audio.check_audio(request.mime_type, request.filename, audio_bytes,
                                              self.max_upload_bytes)
        route = self._way(entry, call, context, request=request, sized=False)
        try:
            return await route.unary(lambda p, c: p.transcribe(request, audio_bytes, c))
        finally:
            _report(context, call, route)

    async def TranscribeStream(
        self, request_iterator: AsyncIterator[pb.TranscribeChunk], context: Ctx
    ) -> pb.TranscribeResponse:
        header: pb.TranscribeRequest | None = None
        pieces: list[bytes] = []
        size = 0
        async for chunk in request_iterator:
            if chunk.HasField("header"):
                if header is not None:
                    raise InvalidRequest("only the first TranscribeChunk may carry a header")
                header = chunk.header
                # Refuse a wrong model or type before the audio is sent.
                self.registry.resolve(header.model, "transcription", endpoint_of(context))
                audio.check_type(header.mime_type, header.filename)
                piece = header.audio
            elif header is None:
                raise InvalidRequest("the first TranscribeChunk must carry the header")
            else:
                piece = chunk.audio
            if piece:
                size += len(piece)
                audio.check_size(size, self.max_upload_bytes)
                pieces.append(piece)
        if header is None:
            raise InvalidRequest("the stream carried no TranscribeChunk")
        audio_bytes = b"".join(pieces)
        pieces.clear()
        header.mime_type = audio.check_audio(header.mime_type, header.filename, audio_bytes,
                                             self.max_upload_bytes)
        header.ClearField("audio")  # the first piece, already in audio_bytes
        entry, call = self._route(header.model, "transcription", context)
        route = self._way(entry, call, context, request=header, sized=False)
        try:
            return await route.unary(lambda p, c: p.transcribe(header, audio_bytes, c))
        finally:
            _report(context, call, route)

    async def GetSpeechSchema(
        self, request: pb.SpeechSchemaRequest, context: Ctx
    ) -> pb.SpeechSchema:
        entry, call = self._route(request.model, "speech", context)
        route = self._way(entry, call, context)
        try:
            return await route.unary(lambda p, c: p.speech_schema(request, c))
        finally:
            _report(context, call, route)

    async def GenerateSpeech(self, request: pb.SpeechRequest, context: Ctx) -> pb.SpeechResponse:
        entry, call = self._route(request.model, "speech", context)
        check_texts((request.input, request.instructions), self.max_prompt_chars,
                    extra=request.params.ByteSize())
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.speech(request, c))
        finally:
            _report(context, call, route)

    async def GenerateImage(self, request: pb.ImageRequest, context: Ctx) -> pb.ImageResponse:
        entry, call = self._route(request.model, "image", context)
        check_texts((request.prompt,), self.max_prompt_chars, extra=request.params.ByteSize())
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.image(request, c))
        finally:
            _report(context, call, route)

    async def Translate(self, request: pb.TranslateRequest, context: Ctx) -> pb.TranslateResponse:
        entry, call = self._route(request.model, "translation", context)
        check_texts((request.text,), self.max_prompt_chars, extra=request.params.ByteSize())
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.translate(request, c))
        finally:
            _report(context, call, route)

    async def Predict(self, request: pb.PredictRequest, context: Ctx) -> pb.PredictResponse:
        entry, call = self._route(request.model, "predict", context)
        if (size := request.ByteSize()) > self.max_prompt_chars:
            raise PayloadTooLarge(f"the predict input is {size} bytes; the limit is "
                                  f"{self.max_prompt_chars}")
        route = self._way(entry, call, context, request=request)
        try:
            return await route.unary(lambda p, c: p.predict(request, c))
        finally:
            _report(context, call, route)
