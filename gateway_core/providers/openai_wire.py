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


# Sampling fields sent rounded: float32 in the proto (0.7 reads back as 0.699999988).
_ROUNDED = frozenset({"temperature", "top_p", "presence_penalty", "frequency_penalty",
                      "repetition_penalty"})


def sampling_fields(params: pb.SamplingParams, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAI sampling fields of a request: the caller's values over the model's defaults.

    Unset values are left out (never sent as null: llama.cpp rejects explicit nulls). The set
    fields are read in one call (``ListFields``): each check of an unset field costs about as
    much as reading a set one.
    """
    body: dict[str, Any] = {k: v for k, v in defaults.items() if v is not None}
    greedy = False
    for field, value in params.ListFields():
        name = field.name
        if name in _ROUNDED:
            body[name] = round(value, 6)
        elif name == "stop":
            body["stop"] = list(value)
        elif name == "logit_bias":
            body["logit_bias"] = {k: ints(v) for k, v in value.items()}
        elif name == "do_sample":
            greedy = not value
        else:  # max_tokens, max_completion_tokens, seed, n, top_k
            body[name] = value
    if greedy:
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


def _tool_choice_json(choice: pb.ToolChoice) -> Any:
    if choice.WhichOneof("choice") == "function":
        return {"type": "function", "function": {"name": choice.function}}
    return choice.mode


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
    body: dict[str, Any] = {"model": upstream_model}
    extra = None
    sampled = False
    for field, value in req.ListFields():  # the set fields, in one call
        name = field.name
        if name == "messages":
            body["messages"] = [message_json(m) for m in value]
        elif name == "params":
            body.update(sampling_fields(value, defaults))
            sampled = True
        elif name == "response_format":
            if value.type:
                body["response_format"] = response_format_json(value)
        elif name == "tools":
            body["tools"] = [_tool_to_openai(t) for t in value]
        elif name == "tool_choice":
            body["tool_choice"] = _tool_choice_json(value)
        elif name in ("parallel_tool_calls", "logprobs", "top_logprobs"):
            body[name] = value
        elif name == "end_user":
            body["user"] = value
        elif name == "extra":
            extra = value
    if "messages" not in body:
        body["messages"] = []
    if not sampled and defaults:
        body.update(sampling_fields(req.params, defaults))
    if extra is not None:
        body.update(struct_to_dict(extra))
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


