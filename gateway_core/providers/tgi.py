"""Text Generation Inference's native API: ``/generate`` and ``/generate_stream``.

Completion sends the prompt as ``inputs``; chat renders the messages into one prompt first (with
the model's ``chat_template`` option, a Jinja template over ``messages``, or a plain
``Role: content`` layout). Parameters are mapped to TGI's names and rules: ``max_new_tokens``,
``temperature`` only when strictly positive, ``top_p`` only inside (0, 1), sampling parameters
dropped when ``do_sample`` is false (TGI samples as soon as any is set). Stream events are TGI's
``{"token": {"text", "special"}, "generated_text", "details"}``; the last one carries the finish
reason and the number of generated tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway_core.errors import Unsupported, UpstreamError
from gateway_core.providers import openai_wire as wire
from gateway_core.providers.base import Call, Provider, register
from gateway_core.providers.http import request_json, stream_sse
from gateway_core.templates import TemplateRenderer, messages_for_template
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb

FINISH = {"length": "length", "eos_token": "stop", "stop_sequence": "stop"}
_TEMPLATE_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class TGIOptions:
    # Jinja over `messages` that turns a chat into the prompt (else "Role: content" lines).
    chat_template: str | None = None


def parameters(params: pb.SamplingParams, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """TGI's ``parameters`` for a request: the caller's values over the model's defaults."""
    p = wire.sampling_fields(params, defaults)
    if p.get("n", 1) != 1:
        raise Unsupported("TGI's native API generates one answer per request ('n' must be 1)")
    if p.get("presence_penalty"):
        raise Unsupported("TGI's native API has no 'presence_penalty'")
    out: dict[str, Any] = {"details": True, "return_full_text": False}
    greedy = params.HasField("do_sample") and not params.do_sample
    if greedy:
        out["do_sample"] = False
    else:
        if (t := p.get("temperature")) is not None and t > 0:
            out["temperature"] = t
        elif t is not None:
            out["do_sample"] = False
            greedy = True
    if not greedy:
        if (top_p := p.get("top_p")) is not None and 0 < top_p < 1:
            out["top_p"] = top_p
        if p.get("top_k"):
            out["top_k"] = p["top_k"]
        if "do_sample" not in out and (params.HasField("do_sample") or "temperature" in out):
            out["do_sample"] = True
    for ours, theirs in (("max_tokens", "max_new_tokens"), ("seed", "seed"),
                         ("repetition_penalty", "repetition_penalty"),
                         ("frequency_penalty", "frequency_penalty")):
        if p.get(ours) is not None:
            out[theirs] = p[ours]
    if p.get("stop"):
        out["stop"] = p["stop"]
    return out


def default_prompt(messages: list[dict[str, Any]]) -> str:
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(lines) + "\n\nAssistant:"


class TGIStream:
    """TGI stream events → text pieces; remembers the finish reason and token count."""

    __slots__ = ("finish_reason", "generated_tokens", "pieces")

    def __init__(self) -> None:
        self.pieces = 0
        self.finish_reason = ""
        self.generated_tokens: int | None = None

    def feed(self, data: Any) -> str:
        try:
            token = data.get("token") or {}
            text = "" if token.get("special") else str(token.get("text") or "")
            details = data.get("details")
            if details:
                self.finish_reason = FINISH.get(details.get("finish_reason"), "stop")
                self.generated_tokens = int(details.get("generated_tokens") or 0)
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError("upstream sent a TGI stream event the gateway cannot read",
                                kind="protocol") from exc
        if text:
            self.pieces += 1
        return text

    def usage(self, prompt_tokens: int) -> pb.Usage:
        completion = self.generated_tokens if self.generated_tokens is not None else self.pieces
        return pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                        total_tokens=prompt_tokens + completion, estimated=True)


def parse_generate(data: Any) -> tuple[str, str, int | None]:
    """(text, finish reason, generated tokens) of a ``/generate`` answer (object or list)."""
    try:
        if isinstance(data, list):
            data = data[0]
        text = data["generated_text"]
        if not isinstance(text, str):
            raise TypeError("generated_text must be a string")
        details = data.get("details") or {}
        reason = FINISH.get(str(details.get("finish_reason")), "stop")
        tokens = details.get("generated_tokens")
        return text, reason, int(tokens) if tokens is not None else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError("upstream answered a TGI generation the gateway cannot read"
                            f" ({exc.__class__.__name__})", kind="protocol") from exc


@register("tgi")
class TGIProvider(Provider):
    """TGI's native generate API (``upstream_url`` is the server's base URL, no ``/v1``)."""

    Options = TGIOptions
    options: TGIOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.renderer = TemplateRenderer(_TEMPLATE_LIMIT, 1.0)

    async def _prompt(self, req: pb.ChatRequest) -> str:
        messages = messages_for_template(req.messages)
        if self.options.chat_template:
            return await self.renderer.render(self.options.chat_template, messages)
        return default_prompt(messages)

    def _body(self, prompt: str, params: pb.SamplingParams) -> dict[str, Any]:
        return {"inputs": prompt, "parameters": parameters(params, self.model.defaults)}

    async def _generate(self, prompt: str, params: pb.SamplingParams,
                        call: Call) -> tuple[str, str, pb.Usage]:
        url = self.url("generate")
        data = await request_json(self.sessions.get(url), "POST", url, call,
                                  json_body=self._body(prompt, params), api_key=self.api_key)
        text, reason, tokens = parse_generate(data)
        prompt_tokens = estimate_tokens(prompt)
        completion = tokens if tokens is not None else estimate_tokens(text)
        return text, reason, pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                                      total_tokens=prompt_tokens + completion, estimated=True)

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        text, reason, usage = await self._generate(req.prompt, req.params, call)
        return pb.CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.CompletionChoice(index=0, text=(req.prompt if req.echo else "") + text,
                                         finish_reason=reason)],
            usage=usage)

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        text, reason, usage = await self._generate(await self._prompt(req), req.params, call)
        return pb.ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.ChatChoice(index=0, finish_reason=reason,
                                   message=pb.ChatMessage(role="assistant", content=text))],
            usage=usage)

    async def _stream(self, prompt: str, params: pb.SamplingParams, call: Call,
                      state: TGIStream) -> AsyncIterator[str]:
        url = self.url("generate_stream")
        async for data in stream_sse(self.sessions.get(url), url, call,
                                     self._body(prompt, params), api_key=self.api_key):
            text = state.feed(data)
            if text:
                yield text

    async def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        cid, created, state = f"cmpl-{uuid.uuid4().hex}", int(time.time()), TGIStream()
        async for text in self._stream(req.prompt, req.params, call, state):
            yield pb.CompletionChunk(id=cid, created=created, model=req.model,
                                     choices=[pb.CompletionChoice(index=0, text=text)])
        yield pb.CompletionChunk(
            id=cid, created=created, model=req.model,
            choices=[pb.CompletionChoice(index=0, finish_reason=state.finish_reason or "stop")],
            usage=state.usage(estimate_tokens(req.prompt)))

    async def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        prompt = await self._prompt(req)
        cid, created, state = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), TGIStream()
        first = True
        async for text in self._stream(prompt, req.params, call, state):
            yield pb.ChatChunk(id=cid, created=created, model=req.model, choices=[
                pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(
                    role="assistant" if first else "", content=text))])
            first = False
        yield pb.ChatChunk(
            id=cid, created=created, model=req.model,
            choices=[pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(),
                                        finish_reason=state.finish_reason or "stop")],
            usage=state.usage(estimate_tokens(prompt)))
