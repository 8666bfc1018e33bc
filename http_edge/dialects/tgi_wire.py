"""Pure translation for the ``tgi`` dialect: Text Generation Inference's own API.

``{"inputs", "parameters", "stream"}`` becomes a CompletionRequest for the model named ``tgi`` (the
core routes that name to config ``tgi_model``). Answers are TGI's: ``{"generated_text",
"details"}`` (a one-element list on ``POST /``, as TGI's compat route and its clients do), stream
events ``{"index", "token", "generated_text", "details"}`` with no ``[DONE]``, and errors
``{"error": "...", "error_type": "validation" | "generation" | "overloaded"}``.

Every request asks the core for log-probabilities (``top_n_tokens`` alternatives): each token the
upstream reports is one stream event with its text, log-probability and (where the upstream says:
TGI, llama.cpp) id and ``special`` flag, the last one carrying ``generated_text`` and ``details``,
so that events and ``details.generated_tokens`` agree; ``details.tokens`` lists them. An upstream
that reports no log-probabilities gives one event per message the core sends (``id: 0``,
``logprob: null``), and a stream whose last message holds no token ends with an empty ``special``
token (like an end-of-sequence token) that carries the final fields.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from typing import Any

import orjson

from http_edge.body import INT64_MAX, Fields
from http_edge.dialects import openai_wire
from http_edge.errors import EdgeError
from http_edge.sse import frame
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb

MODEL = "tgi"
MAX_STOP_SEQUENCES = 16
# OpenAI finish reasons → TGI's.
FINISH_REASONS = {"stop": "eos_token", "length": "length"}

try:
    VERSION = importlib.metadata.version("inference-gateway")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
    VERSION = "0"


@dataclass(frozen=True, slots=True)
class GenerateOptions:
    stream: bool
    details: bool
    # Put before the generated text (the prompt, with return_full_text).
    prefix: str
    seed: int | None
    # top_n_tokens: alternatives shown per token (0: none, and `top_tokens` is null).
    top_n: int = 0


def finish_reason(reason: str) -> str:
    return FINISH_REASONS.get(reason, "eos_token")


def _positive(p: Fields, name: str) -> float | None:
    value = p.float(name, 0, 100)  # bounded: a float32 in the proto
    if value == 0:
        raise EdgeError.bad_request(f"'parameters.{name}' must be strictly positive",
                                    param=f"parameters.{name}")
    return value


def generate_request(body: dict[str, Any], stream: bool | None = None
                     ) -> tuple[pb.CompletionRequest, GenerateOptions]:
    """A TGI generate body → CompletionRequest; ``stream`` overrides the body's ``stream``."""
    f = Fields(body)
    inputs = f.req_str("inputs")
    if not inputs:
        raise EdgeError.bad_request("'inputs' cannot be empty", param="inputs")
    p = f.obj("parameters") or Fields({}, "parameters.")
    params = pb.SamplingParams()
    if (i := p.int("max_new_tokens", 1)) is not None:
        params.max_tokens = i
    temperature = _positive(p, "temperature")
    if temperature is not None:
        params.temperature = temperature
    top_p = p.float("top_p", 0, 1)
    if top_p is not None:
        params.top_p = top_p
    top_k = p.int("top_k", 1)
    if top_k is not None:
        params.top_k = top_k
    if (v := _positive(p, "repetition_penalty")) is not None:
        params.repetition_penalty = v
    if (v := p.float("frequency_penalty", -2, 2)) is not None:
        params.frequency_penalty = v
    seed = p.int("seed", 0, INT64_MAX)
    if seed is not None:
        params.seed = seed
    if (stop := p.str_or_list("stop")) is not None:
        if len(stop) > MAX_STOP_SEQUENCES:
            raise EdgeError.bad_request(
                f"'parameters.stop' may hold at most {MAX_STOP_SEQUENCES} sequences",
                param="parameters.stop")
        params.stop.extend(stop)
    typical_p = p.float("typical_p", 0, 1)  # checked, not forwarded: OpenAI servers lack it
    # As in TGI, a sampling parameter turns sampling on even with do_sample false.
    do_sample = p.bool("do_sample")
    if do_sample or (do_sample is False and temperature is None and top_p is None
                     and top_k is None and typical_p is None):
        params.do_sample = bool(do_sample)
    best_of = p.int("best_of", 1)
    if best_of is not None and best_of > 1:
        raise EdgeError.bad_request("'parameters.best_of' greater than 1 is not supported",
                                    param="parameters.best_of")
    if p.get("grammar") is not None:
        raise EdgeError.bad_request("'parameters.grammar' is not supported by this gateway",
                                    param="parameters.grammar")
    top_n = p.int("top_n_tokens", 1, 20)
    # Accepted for compatibility, with no effect here.
    p.int("truncate", 1)
    p.bool("watermark")
    p.bool("decoder_input_details")
    p.str("adapter_id")
    req = pb.CompletionRequest(model=MODEL, prompt=inputs, params=params, include_usage=True,
                               logprobs=top_n or 0)
    opts = GenerateOptions(
        stream=bool(f.bool("stream", False)) if stream is None else stream,
        details=bool(p.bool("details", False)),
        prefix=inputs if p.bool("return_full_text", False) else "",
        seed=seed,
        top_n=top_n or 0,
    )
    return req, opts


def token_json(t: pb.TokenLogprob) -> dict[str, Any]:
    return {"id": t.id, "text": t.token, "logprob": t.logprob if t.HasField("logprob") else None,
            "special": t.special}


def generate_response(resp: pb.CompletionResponse, opts: GenerateOptions) -> dict[str, Any]:
    choice = resp.choices[0] if resp.choices else pb.CompletionChoice()
    out: dict[str, Any] = {"generated_text": opts.prefix + choice.text}
    if opts.details:
        tokens = choice.logprobs.tokens
        out["details"] = {
            "finish_reason": finish_reason(choice.finish_reason),
            "generated_tokens": resp.usage.completion_tokens,
            "seed": opts.seed,
            "prefill": [],
            "tokens": [token_json(t) for t in tokens],
        }
        if opts.top_n:
            out["details"]["top_tokens"] = [[token_json(x) for x in t.top_logprobs]
                                            for t in tokens]
    return out


def error_type(err: EdgeError) -> str:
    if err.status in (429, 503):
        return "overloaded"
    return "validation" if err.status < 500 else "generation"


def error_json(err: EdgeError, request_id: str) -> dict[str, Any]:
    return {"error": err.message, "error_type": error_type(err)}


def stream_error(err: EdgeError, request_id: str) -> bytes:
    """TGI ends a failed stream with one error event and no ``[DONE]``."""
    return frame(orjson.dumps(error_json(err, request_id)))


# One event's token: (text, id, logprob, special, alternatives).
_Token = tuple[str, int, float | None, bool, list[dict[str, Any]]]


class GenerateEncoder:
    """CompletionChunk → TGI stream events, one per token; the last carries ``generated_text`` and
    ``details``."""

    __slots__ = ("index", "opts", "state", "text")

    def __init__(self, state: RequestState, opts: GenerateOptions) -> None:
        self.state = state
        self.opts = opts
        self.index = 0
        self.text: list[str] = []

    def _tokens(self, c: pb.CompletionChunk) -> list[_Token]:
        out: list[_Token] = []
        for ch in c.choices:
            if ch.index != 0:
                continue
            if ch.logprobs.tokens:
                out.extend((t.token, t.id, t.logprob if t.HasField("logprob") else None,
                            t.special, [token_json(x) for x in t.top_logprobs])
                           for t in ch.logprobs.tokens)
            elif ch.text:
                out.append((ch.text, 0, None, False, []))
        return out

    def _event(self, token: _Token) -> dict[str, Any]:
        text, tid, logprob, special, top = token
        self.index += 1
        if not special:
            self.text.append(text)
        return {"index": self.index,
                "token": {"id": tid, "text": text, "logprob": logprob, "special": special},
                "top_tokens": top if self.opts.top_n else None, "generated_text": None,
                "details": None}

    def encode(self, c: pb.CompletionChunk) -> bytes:
        tokens = self._tokens(c)
        if not c.HasField("usage"):
            return b"".join(frame(orjson.dumps(self._event(t))) for t in tokens)
        openai_wire.record_usage(self.state, c.usage)
        reason = next((ch.finish_reason for ch in c.choices if ch.finish_reason), "stop")
        last = tokens.pop() if tokens else ("", 0, None, True, [])
        data = b"".join(frame(orjson.dumps(self._event(t))) for t in tokens)
        event = self._event(last)
        event["generated_text"] = self.opts.prefix + "".join(self.text)
        if self.opts.details:
            event["details"] = {"finish_reason": finish_reason(reason),
                                "generated_tokens": c.usage.completion_tokens,
                                "seed": self.opts.seed, "input_length": c.usage.prompt_tokens}
        return data + frame(orjson.dumps(event))

    def end(self) -> bytes:
        return b""


def info_json(model: pb.Model) -> dict[str, Any]:
    """``GET /info`` for the TGI routes' model; what the gateway cannot know is null."""
    return {
        "model_id": model.id,
        "model_sha": None,
        "model_pipeline_tag": "text-generation",
        "max_concurrent_requests": None,
        "max_best_of": 1,
        "max_stop_sequences": MAX_STOP_SEQUENCES,
        "max_input_tokens": None,
        "max_total_tokens": None,
        "validation_workers": None,
        "max_client_batch_size": 1,
        "router": "inference-gateway",
        "version": VERSION,
        "sha": None,
        "docker_label": None,
    }
