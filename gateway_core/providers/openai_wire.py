"""Pure conversions between the typed requests and the OpenAI wire format (upstream side).

No I/O here: the OpenAI-compatible provider and the TGI Messages path call these, and the tests run
them on recorded payloads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format

from gateway_core.errors import UpstreamError
from gateway_core.usage_estimates import estimate_tokens, estimated_usage, reported_usage
from inference_gateway.v1 import inference_pb2 as pb

_FORMAT_NAMES = {
    pb.ResponseFormat.TYPE_TEXT: "text",
    pb.ResponseFormat.TYPE_JSON_OBJECT: "json_object",
    pb.ResponseFormat.TYPE_JSON_SCHEMA: "json_schema",
}


def _ints(value: Any) -> Any:
    """Struct numbers are doubles: give whole numbers back as ints (`top_k: 40`, not `40.0`)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def struct_to_dict(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = _ints(json_format.MessageToDict(msg, preserving_proto_field_name=True))
    return out


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
    if params.HasField("do_sample") and not params.do_sample:
        body["temperature"] = 0.0
    return body


def message_to_openai(m: pb.ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.parts:
        parts: list[dict[str, Any]] = []
        for p in m.parts:
            if p.type == "image_url":
                parts.append({"type": "image_url", "image_url": {"url": p.image_url}})
            else:
                parts.append({"type": "text", "text": p.text})
        out["content"] = parts
    else:
        out["content"] = m.content
    if m.name:
        out["name"] = m.name
    return out


def chat_body(
    req: pb.ChatRequest, upstream_model: str, defaults: Mapping[str, Any], stream: bool,
    stream_usage: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": upstream_model,
        "messages": [message_to_openai(m) for m in req.messages],
    }
    body.update(sampling_fields(req.params, defaults))
    if req.HasField("response_format") and req.response_format.type:
        rf = req.response_format
        fmt: dict[str, Any] = {"type": _FORMAT_NAMES[rf.type]}
        if rf.type == pb.ResponseFormat.TYPE_JSON_SCHEMA:
            fmt["json_schema"] = {
                "name": rf.schema_name or "response",
                "schema": struct_to_dict(rf.json_schema),
            }
        body["response_format"] = fmt
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
    if req.echo:
        body["echo"] = True
    if req.end_user:
        body["user"] = req.end_user
    if req.HasField("extra"):
        body.update(struct_to_dict(req.extra))
    if stream:
        body["stream"] = True
        if stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    raise TypeError(f"expected text, got {type(value).__name__}")


def prompt_tokens_of(messages: Any) -> int:
    """Estimated prompt tokens of chat messages (a few tokens of framing per message)."""
    total = 0
    for m in messages:
        text = m.content if not m.parts else "".join(p.text for p in m.parts)
        total += estimate_tokens(text) + 4
    return total + 2


def parse_chat_response(
    data: Any, model: str, prompt_tokens: int | Callable[[], int]
) -> pb.ChatResponse:
    """An upstream chat.completion body → ChatResponse (model renamed to the caller's id)."""
    try:
        choices = []
        for c in data["choices"]:
            msg = c.get("message") or {}
            choices.append(
                pb.ChatChoice(
                    index=int(c.get("index", 0)),
                    message=pb.ChatMessage(
                        role=msg.get("role") or "assistant", content=_text(msg.get("content"))
                    ),
                    finish_reason=c.get("finish_reason") or "",
                )
            )
        resp = pb.ChatResponse(
            id=str(data.get("id") or ""),
            created=int(data.get("created") or 0),
            model=model,
            choices=choices,
            system_fingerprint=str(data.get("system_fingerprint") or ""),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(
            f"upstream answered a chat completion the gateway cannot read ({exc.__class__.__name__})",
            kind="protocol",
        ) from exc
    usage = reported_usage(data.get("usage")) or estimated_usage(
        prompt_tokens, sum(estimate_tokens(c.message.content) for c in resp.choices))
    resp.usage.CopyFrom(usage)
    return resp


def parse_completion_response(
    data: Any, model: str, prompt_tokens: int | Callable[[], int]
) -> pb.CompletionResponse:
    try:
        choices = [
            pb.CompletionChoice(
                index=int(c.get("index", 0)),
                text=_text(c.get("text")),
                finish_reason=c.get("finish_reason") or "",
            )
            for c in data["choices"]
        ]
        resp = pb.CompletionResponse(
            id=str(data.get("id") or ""),
            created=int(data.get("created") or 0),
            model=model,
            choices=choices,
            system_fingerprint=str(data.get("system_fingerprint") or ""),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UpstreamError(
            f"upstream answered a completion the gateway cannot read ({exc.__class__.__name__})",
            kind="protocol",
        ) from exc
    usage = reported_usage(data.get("usage")) or estimated_usage(
        prompt_tokens, sum(estimate_tokens(c.text) for c in resp.choices))
    resp.usage.CopyFrom(usage)
    return resp
