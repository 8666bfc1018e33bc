"""Text Generation Inference's native API: ``/generate`` and ``/generate_stream``.

Completion sends the prompt as ``inputs``; chat renders the messages into one prompt first (with
the model's ``chat_template`` option, a Jinja template over ``messages``, or a plain
``Role: content`` layout). Parameters are mapped to TGI's names and rules: ``max_new_tokens``,
``temperature`` only when strictly positive, ``top_p`` only inside (0, 1), sampling parameters
dropped when ``do_sample`` is false (TGI samples as soon as any is set). Stream events are TGI's
``{"token": {"id", "text", "logprob", "special"}, "top_tokens", "generated_text", "details"}``, one
per token; the last one carries the finish reason and the number of generated tokens, and its token
goes out in the stream's final message, so messages and tokens agree. Asked for log-probabilities,
the provider gives TGI's own per token (with its id, and ``top_n_tokens`` alternatives). TGI's
native API has no tool calls: a request with tools needs its Messages API (provider ``openai``).
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


def _no_tools() -> Unsupported:
    return Unsupported("TGI's native API has no tool calls; serve this model with provider "
                       "'openai' on TGI's Messages API (upstream_url ending in /v1)")


def _chat_top(req: pb.ChatRequest) -> int | None:
    """How many alternatives a chat request wants per token; None without ``logprobs``."""
    if not req.logprobs:
        return None
    return req.top_logprobs if req.HasField("top_logprobs") else 0


@dataclass(frozen=True)
class TGIOptions:
    # Jinja over `messages` that turns a chat into the prompt (else "Role: content" lines).
    chat_template: str | None = None


def parameters(params: pb.SamplingParams, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """TGI's ``parameters`` for a request: the caller's values over the model's defaults."""
    p = wire.sampling_fields(params, defaults)
    if params.logit_bias:
        raise Unsupported("TGI's native API has no 'logit_bias'")
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
    if (limit := wire.max_tokens_of(params)) is not None:
        out["max_new_tokens"] = limit
    for ours, theirs in (("seed", "seed"),
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


def token_entry(token: Any, top: Any = None) -> pb.TokenLogprob:
    """A TGI token ``{"id", "text", "logprob", "special"}`` (and its alternatives) as an entry."""
    text = str(token.get("text") or "")
    entry = pb.TokenLogprob(token=text, utf8=text.encode(), id=int(token.get("id") or 0),
                            special=bool(token.get("special")))
    if (lp := token.get("logprob")) is not None:
        entry.logprob = float(lp)
    for alt in top or ():
        entry.top_logprobs.append(token_entry(alt))
    return entry


class TGIStream:
    """TGI stream events → (text, token entry); remembers the finish reason and token count."""

    __slots__ = ("finish_reason", "generated_tokens", "pieces")

    def __init__(self) -> None:
        self.pieces = 0
        self.finish_reason = ""
        self.generated_tokens: int | None = None

    def feed(self, data: Any) -> tuple[str, pb.TokenLogprob, bool]:
        """(text, the token as an entry, whether it is the last: it carries ``details``)."""
        try:
            token = data.get("token") or {}
            text = "" if token.get("special") else str(token.get("text") or "")
            entry = token_entry(token, data.get("top_tokens"))
            details = data.get("details")
            if details:
                self.finish_reason = FINISH.get(details.get("finish_reason"), "stop")
                self.generated_tokens = int(details.get("generated_tokens") or 0)
        except (AttributeError, TypeError, ValueError) as exc:
            raise UpstreamError("upstream sent a TGI stream event the gateway cannot read",
                                kind="protocol") from exc
        if text:
            self.pieces += 1
        return text, entry, bool(details)

    def usage(self, prompt_tokens: int) -> pb.Usage:
        completion = self.generated_tokens if self.generated_tokens is not None else self.pieces
        return pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                        total_tokens=prompt_tokens + completion, estimated=True)


def parse_generate(data: Any) -> tuple[str, str, int | None, list[pb.TokenLogprob]]:
    """(text, finish reason, generated tokens, the tokens as entries) of a ``/generate`` answer
    (object or list)."""
    try:
        if isinstance(data, list):
            data = data[0]
        text = data["generated_text"]
        if not isinstance(text, str):
            raise TypeError("generated_text must be a string")
        details = data.get("details") or {}
        reason = FINISH.get(str(details.get("finish_reason")), "stop")
        tokens = details.get("generated_tokens")
        tops = details.get("top_tokens") or []
        entries = [token_entry(t, tops[i] if i < len(tops) else None)
                   for i, t in enumerate(details.get("tokens") or ())]
        return text, reason, int(tokens) if tokens is not None else None, entries
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
        if req.tools:
            raise _no_tools()
        messages = messages_for_template(req.messages)
        if self.options.chat_template:
            return await self.renderer.render(self.options.chat_template, messages)
        return default_prompt(messages)

    def _body(self, prompt: str, params: pb.SamplingParams, top: int | None) -> dict[str, Any]:
        fields = parameters(params, self.model.defaults)
        if top:
            fields["top_n_tokens"] = top
        return {"inputs": prompt, "parameters": fields}

    async def _generate(self, prompt: str, params: pb.SamplingParams, top: int | None,
                        call: Call) -> tuple[str, str, pb.Usage, list[pb.TokenLogprob]]:
        url = self.url("generate")
        data = await request_json(self.sessions.get(url), "POST", url, call,
                                  json_body=self._body(prompt, params, top), api_key=self.api_key)
        text, reason, tokens, entries = parse_generate(data)
        prompt_tokens = estimate_tokens(prompt)
        completion = tokens if tokens is not None else estimate_tokens(text)
        usage = pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                         total_tokens=prompt_tokens + completion, estimated=True)
        return text, reason, usage, entries

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        top = req.logprobs if req.HasField("logprobs") else None
        text, reason, usage, entries = await self._generate(req.prompt, req.params, top, call)
        resp = pb.CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.CompletionChoice(index=0, text=(req.prompt if req.echo else "") + text,
                                         finish_reason=reason)],
            usage=usage)
        if top is not None:
            resp.choices[0].logprobs.tokens.extend(entries)
        return resp

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        top = _chat_top(req)
        text, reason, usage, entries = await self._generate(await self._prompt(req), req.params,
                                                            top, call)
        resp = pb.ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.ChatChoice(index=0, finish_reason=reason,
                                   message=pb.ChatMessage(role="assistant", content=text))],
            usage=usage)
        if top is not None:
            resp.choices[0].logprobs.content.extend(entries)
        return resp

    async def _stream(self, prompt: str, params: pb.SamplingParams, top: int | None, call: Call,
                      state: TGIStream) -> AsyncIterator[tuple[str, pb.TokenLogprob, bool]]:
        url = self.url("generate_stream")
        async for data in stream_sse(self.sessions.get(url), url, call,
                                     self._body(prompt, params, top), api_key=self.api_key):
            yield state.feed(data)

    async def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        cid, created, state = f"cmpl-{uuid.uuid4().hex}", int(time.time()), TGIStream()
        top = req.logprobs if req.HasField("logprobs") else None
        last: pb.CompletionChoice | None = None
        async for text, entry, is_last in self._stream(req.prompt, req.params, top, call, state):
            choice = pb.CompletionChoice(index=0, text=text)
            if top is not None:
                choice.logprobs.tokens.append(entry)
            if is_last:
                last = choice
            elif text or top is not None:
                yield pb.CompletionChunk(id=cid, created=created, model=req.model,
                                         choices=[choice])
        last = last or pb.CompletionChoice(index=0)
        last.finish_reason = state.finish_reason or "stop"
        yield pb.CompletionChunk(id=cid, created=created, model=req.model, choices=[last],
                                 usage=state.usage(estimate_tokens(req.prompt)))

    async def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        if req.tools:
            raise _no_tools()
        prompt = await self._prompt(req)
        cid, created, state = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), TGIStream()
        top = _chat_top(req)
        role = "assistant"
        last: pb.ChatChunkChoice | None = None
        async for text, entry, is_last in self._stream(prompt, req.params, top, call, state):
            choice = pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(role=role))
            if text:
                choice.delta.content = text
            if top is not None:
                choice.logprobs.content.append(entry)
            if is_last:
                last = choice
            elif text or top is not None:
                role = ""
                yield pb.ChatChunk(id=cid, created=created, model=req.model, choices=[choice])
        last = last or pb.ChatChunkChoice(index=0, delta=pb.ChatDelta())
        last.finish_reason = state.finish_reason or "stop"
        yield pb.ChatChunk(id=cid, created=created, model=req.model, choices=[last],
                           usage=state.usage(estimate_tokens(prompt)))
