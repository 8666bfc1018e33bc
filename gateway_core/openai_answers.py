"""Upstream OpenAI-format answers and stream events → typed messages, keeping every field.

No I/O. The typed fields go to their proto fields; every other non-null field goes to the
``extra`` of the level it came from (answer, choice, message or delta, tool call, usage, token), so
the edge gives it back where it was. A null field is the same as an absent one. The gateway owns
only ``id`` when the upstream gives none, ``object``, and ``model`` (the caller's model id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway_common.structs import to_struct
from gateway_core.errors import UpstreamError
from gateway_core.usage_estimates import estimate_tokens, estimated_usage
from inference_gateway.v1 import inference_pb2 as pb

TOP_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint"})
CHOICE_KEYS = frozenset({"index", "message", "delta", "text", "finish_reason", "logprobs"})
MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal",
                          "reasoning_content", "reasoning"})
_TOOL_CALL_KEYS = frozenset({"index", "id", "type", "function"})
_TOKEN_KEYS = frozenset({"token", "logprob", "bytes", "top_logprobs", "id"})
_USAGE_KEYS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens"})


def extra_of(data: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    """The non-null fields of ``data`` that are not in ``known`` (None when there are none)."""
    out: dict[str, Any] | None = None
    for key, value in data.items():
        if value is not None and key not in known:
            if out is None:
                out = {}
            out[key] = value
    return out


def _keep_extra(target: Any, data: dict[str, Any], known: frozenset[str]) -> None:
    """``data``'s fields outside ``known`` into ``target.extra``, when it has any."""
    if extra := extra_of(data, known):
        target.extra.CopyFrom(to_struct(extra))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    raise TypeError(f"expected text, got {type(value).__name__}")


def _count(value: Any) -> int:
    return int(value or 0)


def usage_from_openai(data: Any) -> pb.Usage | None:
    """An upstream's ``usage`` object with its details, or None when absent or unreadable."""
    if not isinstance(data, dict) or not data:
        return None
    try:
        prompt = _count(data.get("prompt_tokens"))
        completion = _count(data.get("completion_tokens"))
        usage = pb.Usage(prompt_tokens=prompt, completion_tokens=completion,
                         total_tokens=_count(data.get("total_tokens")) or prompt + completion)
        extra = extra_of(data, _USAGE_KEYS)
        if extra:
            for key, field, typed in (("prompt_tokens_details", "cached_tokens", "cached_tokens"),
                                      ("completion_tokens_details", "reasoning_tokens",
                                       "reasoning_tokens")):
                details = extra.get(key)
                if isinstance(details, dict) and details.get(field) is not None:
                    setattr(usage, typed, _count(details[field]))
                    rest = {k: v for k, v in details.items() if k != field}
                    if rest:
                        extra[key] = rest
                    else:
                        del extra[key]
            if extra:
                usage.extra.CopyFrom(to_struct(extra))
    except (TypeError, ValueError):
        return None
    return usage


def token_logprob(entry: Any) -> pb.TokenLogprob:
    """One ``logprobs.content`` entry (token, logprob, bytes, top_logprobs; llama.cpp's id)."""
    t = pb.TokenLogprob(token=str(entry.get("token") or ""))
    if (lp := entry.get("logprob")) is not None:
        t.logprob = float(lp)
    if (raw := entry.get("bytes")) is not None:
        t.utf8 = bytes(raw)
    if (tid := entry.get("id")) is not None:
        t.id = int(tid)
    for top in entry.get("top_logprobs") or ():
        t.top_logprobs.append(token_logprob(top))
    _keep_extra(t, entry, _TOKEN_KEYS)
    return t


def chat_logprobs(data: Any) -> pb.ChatLogprobs | None:
    if not data:
        return None
    lp = pb.ChatLogprobs()
    lp.content.extend(token_logprob(e) for e in data.get("content") or ())
    lp.refusal.extend(token_logprob(e) for e in data.get("refusal") or ())
    return lp


def completion_logprobs(data: Any) -> pb.CompletionLogprobs | None:
    """OpenAI's parallel arrays → one entry per token."""
    if not data:
        return None
    tokens = data.get("tokens") or []
    logprobs = data.get("token_logprobs") or []
    tops = data.get("top_logprobs")
    offsets = data.get("text_offset")
    lp = pb.CompletionLogprobs()
    for i, token in enumerate(tokens):
        t = lp.tokens.add(token=str(token))
        if i < len(logprobs) and logprobs[i] is not None:
            t.logprob = float(logprobs[i])
        top = tops[i] if tops is not None and i < len(tops) else None
        if top is None:
            t.top_logprobs_null = True
        else:
            for alt, alt_lp in top.items():
                t.top_logprobs.add(token=alt, logprob=float(alt_lp))
        if offsets is not None and i < len(offsets):
            t.text_offset = int(offsets[i])
    return lp


def tool_call(entry: Any) -> pb.ToolCall:
    """A tool call (or a stream fragment of one): only the fields it carries are set."""
    t = pb.ToolCall(index=int(entry.get("index") or 0))
    if (tid := entry.get("id")) is not None:
        t.id = str(tid)
    if (kind := entry.get("type")) is not None:
        t.type = str(kind)
    fn = entry.get("function")
    if fn is not None:
        t.function.SetInParent()
        if (name := fn.get("name")) is not None:
            t.function.name = str(name)
        if (args := fn.get("arguments")) is not None:
            t.function.arguments = args if isinstance(args, str) else json_text(args)
    _keep_extra(t, entry, _TOOL_CALL_KEYS)
    return t


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def message(msg: dict[str, Any]) -> pb.ChatMessage:
    """An answer's ``message``: content (null stays unset), tool calls, refusal, reasoning."""
    m = pb.ChatMessage(role=str(msg.get("role") or "assistant"))
    content = msg.get("content")
    if content is not None:
        m.content = _text(content)
    if name := msg.get("name"):
        m.name = str(name)
    for call in msg.get("tool_calls") or ():
        m.tool_calls.append(tool_call(call))
    if tid := msg.get("tool_call_id"):
        m.tool_call_id = str(tid)
    for field in ("refusal", "reasoning_content", "reasoning"):
        if (value := msg.get(field)) is not None:
            setattr(m, field, _text(value))
    _keep_extra(m, msg, MESSAGE_KEYS)
    return m


def _answer_tokens(m: pb.ChatMessage) -> int:
    """Estimated tokens of an answer: its text, refusal, reasoning and tool calls."""
    return (estimate_tokens(m.content) + estimate_tokens(m.refusal)
            + estimate_tokens(m.reasoning_content) + estimate_tokens(m.reasoning)
            + sum(estimate_tokens(t.function.name) + estimate_tokens(t.function.arguments)
                  for t in m.tool_calls))


def _protocol_error(what: str, exc: Exception) -> UpstreamError:
    return UpstreamError(
        f"upstream answered {what} the gateway cannot read ({exc.__class__.__name__})",
        kind="protocol")


def _choices(data: Any) -> list[Any]:
    """The answer's choices: a non-empty list, else the answer is not one (ValueError)."""
    choices = data["choices"]
    if not isinstance(choices, list) or not choices:
        raise ValueError("no choices")
    return choices


def parse_chat_response(
    data: Any, model: str, prompt_tokens: int | Callable[[], int]
) -> pb.ChatResponse:
    """An upstream chat.completion body → ChatResponse (model renamed to the caller's id)."""
    try:
        resp = pb.ChatResponse(
            id=str(data.get("id") or ""), created=int(data.get("created") or 0), model=model,
            system_fingerprint=str(data.get("system_fingerprint") or ""))
        for c in _choices(data):
            choice = resp.choices.add(index=int(c.get("index") or 0),
                                      finish_reason=c.get("finish_reason") or "")
            choice.message.CopyFrom(message(c.get("message") or {}))
            if (lp := chat_logprobs(c.get("logprobs"))) is not None:
                choice.logprobs.CopyFrom(lp)
            _keep_extra(choice, c, CHOICE_KEYS)
        _keep_extra(resp, data, TOP_KEYS)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _protocol_error("a chat completion", exc) from exc
    usage = usage_from_openai(data.get("usage")) or estimated_usage(
        prompt_tokens, sum(_answer_tokens(c.message) for c in resp.choices))
    resp.usage.CopyFrom(usage)
    return resp


def parse_completion_response(
    data: Any, model: str, prompt_tokens: int | Callable[[], int]
) -> pb.CompletionResponse:
    try:
        resp = pb.CompletionResponse(
            id=str(data.get("id") or ""), created=int(data.get("created") or 0), model=model,
            system_fingerprint=str(data.get("system_fingerprint") or ""))
        for c in _choices(data):
            text = c.get("text")
            choice = resp.choices.add(index=int(c.get("index") or 0),
                                      text=_text(text) if text is not None else "",
                                      finish_reason=c.get("finish_reason") or "")
            if (lp := completion_logprobs(c.get("logprobs"))) is not None:
                choice.logprobs.CopyFrom(lp)
            _keep_extra(choice, c, CHOICE_KEYS)
        _keep_extra(resp, data, TOP_KEYS)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _protocol_error("a completion", exc) from exc
    usage = usage_from_openai(data.get("usage")) or estimated_usage(
        prompt_tokens, sum(estimate_tokens(c.text) for c in resp.choices))
    resp.usage.CopyFrom(usage)
    return resp
