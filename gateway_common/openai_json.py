"""Typed chat messages → OpenAI's JSON shapes (shared by the edge and the core, no I/O).

The core sends messages upstream in these shapes and the edge answers its clients in them, so the
two agree field for field. A field unset in the message stays out of the JSON (a null and an absent
field mean the same to OpenAI's clients); the ``extra`` of each level is merged back where it came
from.
"""

from __future__ import annotations

from typing import Any

from gateway_common.structs import struct_to_dict
from inference_gateway.v1 import inference_pb2 as pb


def part_json(p: pb.ContentPart) -> dict[str, Any]:
    part: dict[str, Any] = {"type": p.type}
    if p.type == "text":
        part["text"] = p.text
    elif p.type == "image_url":
        image: dict[str, Any] = {"url": p.image_url}
        if p.detail:
            image["detail"] = p.detail
        part["image_url"] = image
    elif p.type == "input_audio":
        part["input_audio"] = {"data": p.input_audio.data, "format": p.input_audio.format}
    if p.HasField("extra"):
        part.update(struct_to_dict(p.extra))
    return part


def tool_call_json(t: pb.ToolCall, with_index: bool = False) -> dict[str, Any]:
    """A tool call (or, ``with_index``, a stream fragment of one) in OpenAI's shape."""
    out: dict[str, Any] = {"index": t.index} if with_index else {}
    if t.HasField("id"):
        out["id"] = t.id
    if t.HasField("type"):
        out["type"] = t.type
    if t.HasField("function"):
        fn: dict[str, Any] = {}
        if t.function.HasField("name"):
            fn["name"] = t.function.name
        if t.function.HasField("arguments"):
            fn["arguments"] = t.function.arguments
        out["function"] = fn
    if t.HasField("extra"):
        out.update(struct_to_dict(t.extra))
    return out


def message_json(m: pb.ChatMessage, default_role: str = "") -> dict[str, Any]:
    """A message in OpenAI's shape; unset content is null (a message that only calls tools).

    The set fields are read in one call (``ListFields``, in field-number order: role, content,
    parts, name, tool_calls, tool_call_id, refusal, reasoning_content, reasoning, extra): each
    check of an unset field costs about as much as reading a set one.
    """
    out: dict[str, Any] = {"role": default_role, "content": None}
    for field, value in m.ListFields():
        name = field.name
        if name == "parts":
            out["content"] = [part_json(p) for p in value]
        elif name == "tool_calls":
            out["tool_calls"] = [tool_call_json(t) for t in value]
        elif name == "extra":
            out.update(struct_to_dict(value))
        else:  # role, content, name, tool_call_id, refusal, reasoning_content, reasoning
            out[name] = value
    return out


def delta_json(d: pb.ChatDelta) -> dict[str, Any]:
    """A stream delta's fields besides ``role``, in OpenAI's shape."""
    out: dict[str, Any] = {}
    if d.HasField("content"):
        out["content"] = d.content
    if d.HasField("reasoning_content"):
        out["reasoning_content"] = d.reasoning_content
    if d.HasField("reasoning"):
        out["reasoning"] = d.reasoning
    if d.HasField("refusal"):
        out["refusal"] = d.refusal
    if d.tool_calls:
        out["tool_calls"] = [tool_call_json(t, with_index=True) for t in d.tool_calls]
    if d.HasField("extra"):
        out.update(struct_to_dict(d.extra))
    return out


def token_logprob_json(t: pb.TokenLogprob, with_top: bool = True) -> dict[str, Any]:
    """One chat ``logprobs.content`` entry: token, logprob, bytes (null when unknown), top."""
    out: dict[str, Any] = {
        "token": t.token,
        "logprob": t.logprob if t.HasField("logprob") else None,
        "bytes": list(t.utf8) if t.HasField("utf8") else None,
    }
    if t.HasField("id"):
        out["id"] = t.id
    if with_top:
        out["top_logprobs"] = [token_logprob_json(x, with_top=False) for x in t.top_logprobs]
    if t.HasField("extra"):
        out.update(struct_to_dict(t.extra))
    return out


def chat_logprobs_json(lp: pb.ChatLogprobs) -> dict[str, Any]:
    return {
        "content": [token_logprob_json(t) for t in lp.content] if lp.content else None,
        "refusal": [token_logprob_json(t) for t in lp.refusal] if lp.refusal else None,
    }


def completion_logprobs_json(lp: pb.CompletionLogprobs) -> dict[str, Any]:
    """OpenAI's parallel arrays: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens = lp.tokens
    tops: list[Any] | None = [
        None if t.top_logprobs_null else {x.token: x.logprob for x in t.top_logprobs}
        for t in tokens]
    if tops and all(x is None for x in tops):
        tops = None
    out: dict[str, Any] = {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob if t.HasField("logprob") else None for t in tokens],
        "top_logprobs": tops,
    }
    if any(t.HasField("text_offset") for t in tokens):
        out["text_offset"] = [t.text_offset for t in tokens]
    return out


def usage_json(u: pb.Usage) -> dict[str, Any]:
    """Usage with the upstream's details; ``estimated: true`` when the gateway counted it."""
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.HasField("extra"):
        out.update(struct_to_dict(u.extra))
    if u.HasField("cached_tokens"):
        _detail(out, "prompt_tokens_details", "cached_tokens", u.cached_tokens)
    if u.HasField("reasoning_tokens"):
        _detail(out, "completion_tokens_details", "reasoning_tokens", u.reasoning_tokens)
    if u.estimated:
        out["estimated"] = True
    return out


def _detail(out: dict[str, Any], key: str, name: str, value: int) -> None:
    known = out.get(key)
    out[key] = {**(known if isinstance(known, dict) else {}), name: value}
