"""Pure conversions between the typed requests and the OpenAI wire format (upstream side).

No I/O here: the OpenAI-compatible provider and the TGI Messages path call these, and the tests run
them on recorded payloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway_common.openai_json import message_json
from gateway_common.structs import ints, struct_to_dict
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb

_FORMAT_NAMES = {
    pb.ResponseFormat.TYPE_TEXT: "text",
    pb.ResponseFormat.TYPE_JSON_OBJECT: "json_object",
    pb.ResponseFormat.TYPE_JSON_SCHEMA: "json_schema",
}


def sampling_fields(params: pb.SamplingParams, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI sampling fields of a request: the caller's values over the model's defaults.

    Unset values are left out (never sent as null: llama.cpp rejects explicit nulls).
    """
    body: dict[str, Any] = {k: v for k, v in defaults.items() if v is not None}
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        if params.HasField(name):
            body[name] = round(getattr(params, name), 6)
    if params.HasField("max_tokens"):
        body["max_tokens"] = params.max_tokens
    if params.HasField("max_completion_tokens"):
        body["max_completion_tokens"] = params.max_completion_tokens
    if params.HasField("seed"):
        body["seed"] = params.seed
    if params.HasField("n"):
        body["n"] = params.n
    if params.HasField("top_k"):
        body["top_k"] = params.top_k
    if params.HasField("repetition_penalty"):
        body["repetition_penalty"] = round(params.repetition_penalty, 6)
    if params.stop:
        body["stop"] = list(params.stop)
    if params.logit_bias:
        body["logit_bias"] = {k: ints(v) for k, v in params.logit_bias.items()}
    if params.HasField("do_sample") and not params.do_sample:
        body["temperature"] = 0.0
    return body


def max_tokens_of(params: pb.SamplingParams) -> int | None:
    """The completion length limit under either name (for upstreams that know only one)."""
    if params.HasField("max_completion_tokens"):
        return params.max_completion_tokens
    return params.max_tokens if params.HasField("max_tokens") else None


def _tool_to_openai(t: pb.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": t.type}
    if t.HasField("function"):
        f = t.function
        fn: dict[str, Any] = {"name": f.name}
        if f.description:
            fn["description"] = f.description
        if f.HasField("parameters"):
            fn["parameters"] = struct_to_dict(f.parameters)
        if f.HasField("strict"):
            fn["strict"] = f.strict
        out["function"] = fn
    if t.HasField("extra"):
        out.update(struct_to_dict(t.extra))
    return out


def _tools_fields(req: pb.ChatRequest, body: dict[str, Any]) -> None:
    """The tool and log-probability fields of a chat request, as the caller gave them."""
    if req.tools:
        body["tools"] = [_tool_to_openai(t) for t in req.tools]
    kind = req.tool_choice.WhichOneof("choice") if req.HasField("tool_choice") else None
    if kind == "mode":
        body["tool_choice"] = req.tool_choice.mode
    elif kind == "function":
        body["tool_choice"] = {"type": "function", "function": {"name": req.tool_choice.function}}
    if req.HasField("parallel_tool_calls"):
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.HasField("logprobs"):
        body["logprobs"] = req.logprobs
    if req.HasField("top_logprobs"):
        body["top_logprobs"] = req.top_logprobs


def response_format_json(rf: pb.ResponseFormat) -> dict[str, Any]:
    fmt: dict[str, Any] = {"type": _FORMAT_NAMES[rf.type]}
    if rf.type == pb.ResponseFormat.TYPE_JSON_SCHEMA:
        schema: dict[str, Any] = {"name": rf.schema_name or "response"}
        if rf.schema_description:
            schema["description"] = rf.schema_description
        schema["schema"] = struct_to_dict(rf.json_schema)
        if rf.HasField("schema_strict"):
            schema["strict"] = rf.schema_strict
        fmt["json_schema"] = schema
    return fmt


def chat_body(
    req: pb.ChatRequest, upstream_model: str, defaults: Mapping[str, Any], stream: bool,
    stream_usage: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": [message_json(m) for m in req.messages],
    }
    body.update(sampling_fields(req.params, defaults))
    if req.HasField("response_format") and req.response_format.type:
        body["response_format"] = response_format_json(req.response_format)
    _tools_fields(req, body)
    if req.end_user:
        body["user"] = req.end_user
    if req.HasField("extra"):
        body.update(struct_to_dict(req.extra))
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def completion_body(
    req: pb.CompletionRequest, upstream_model: str, defaults: Mapping[str, Any], stream: bool,
    stream_usage: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {"model": upstream_model, "prompt": req.prompt}
    body.update(sampling_fields(req.params, defaults))
    if req.HasField("echo"):
        body["echo"] = req.echo
    if req.HasField("logprobs"):
        body["logprobs"] = req.logprobs
    if req.end_user:
        body["user"] = req.end_user
    if req.HasField("extra"):
        body.update(struct_to_dict(req.extra))
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def prompt_tokens_of(messages: Any) -> int:
    """Estimated prompt tokens of chat messages (a few tokens of framing per message)."""
    total = 0
    for m in messages:
        text = m.content if not m.parts else "".join(p.text for p in m.parts)
        total += estimate_tokens(text) + 4
        for call in m.tool_calls:
            total += estimate_tokens(call.function.name) + estimate_tokens(call.function.arguments)
    return total + 2


