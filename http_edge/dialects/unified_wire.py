"""Pure translation for the ``unified`` dialect (seed 003): ``/v1/inference/chat``.

Requests carry ``model``, ``messages`` (content as a string or a list of ``{"type": "text"}``
parts) and a ``parameters`` object whose multi-word keys come in two spellings (``max_tokens`` or
``maxTokens``). Answers follow the seed's versioned schemas: ``inference.response.v1``, stream
chunks ``inference.response.chunk.v1``, a final ``inference.response.usage.chunk.v1``, ``[DONE]``.

Tools: ``tools`` and ``tool_choice`` in OpenAI's format beside ``messages``. A tool call comes back
as a content part ``{"type": "tool_use", "id", "name", "input"}`` with ``stop_reason: "tool_use"``
(in a stream: chunks with empty ``content`` and a ``tool_use`` fragment ``{"index", "id", "name",
"partial_json"}``); the caller answers with an assistant message holding those parts and a user
message with ``{"type": "tool_result", "tool_use_id", "content"}`` parts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from http_edge.body import Fields, check_nesting
from http_edge.dialects import openai_wire
from http_edge.errors import EdgeError
from http_edge.sse import DONE, frame
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb

RESPONSE_SCHEMA = "inference.response.v1"
CHUNK_SCHEMA = "inference.response.chunk.v1"
USAGE_CHUNK_SCHEMA = "inference.response.usage.chunk.v1"
ERROR_SCHEMA = "inference.error.v1"

ROLES = frozenset({"user", "assistant", "system"})
# The seed's defaults, applied when a request leaves them out.
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 256
DEFAULT_TOP_P = 0.9
CLASSIFICATIONS = frozenset({"internal", "external", "confidential", "all"})

# OpenAI finish reasons → the seed's stop reasons (others pass through).
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "content_filter": "content_filtered",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChatOptions:
    stream: bool
    include_usage: bool


def stop_reason(finish_reason: str) -> str:
    return STOP_REASONS.get(finish_reason or "stop", finish_reason)


def _either(get: Callable[..., T | None], snake: str, camel: str, *bounds: float) -> T | None:
    """A parameter given in either spelling (both, when equal, are fine)."""
    a, b = get(snake, *bounds), get(camel, *bounds)
    if a is not None and b is not None and a != b:
        raise EdgeError.bad_request(
            f"'parameters.{snake}' and 'parameters.{camel}' disagree; give one of them",
            param=f"parameters.{camel}")
    return a if a is not None else b


def _tool_parts(m: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """A message whose content holds tool_use or tool_result parts → OpenAI messages (an
    assistant message with tool_calls; one tool message per result, then the text)."""
    texts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, part in enumerate(m["content"]):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "tool_use" and m.get("role") == "assistant":
            name, call_id = part.get("name"), part.get("id")
            if not isinstance(name, str) or not isinstance(call_id, str):
                raise EdgeError.bad_request(f"'{at}' needs a string 'id' and 'name'", param=at)
            args = part.get("input", {})
            calls.append({"id": call_id, "type": "function", "function": {
                "name": name, "arguments": args if isinstance(args, str) else
                orjson.dumps(args).decode()}})
        elif kind == "tool_result" and m.get("role") == "user":
            content = part.get("content", "")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            if not isinstance(part.get("tool_use_id"), str) or not isinstance(content, str):
                raise EdgeError.bad_request(f"'{at}' needs a string 'tool_use_id' and 'content'",
                                            param=at)
            results.append({"role": "tool", "tool_call_id": part["tool_use_id"],
                            "content": content})
        else:
            texts.append(part)
    out = results
    if calls:
        out.append({"role": "assistant", "content": texts or None, "tool_calls": calls})
    elif texts:
        out.append({"role": m.get("role"), "content": texts})
    return out


def _messages(value: Any) -> list[pb.ChatMessage]:
    if isinstance(value, list):
        flat: list[Any] = []
        for i, m in enumerate(value):
            if isinstance(m, dict) and isinstance(m.get("content"), list) and any(
                    isinstance(p, dict) and p.get("type") in ("tool_use", "tool_result")
                    for p in m["content"]):
                flat.extend(_tool_parts(m, f"messages[{i}]"))
            else:
                flat.append(m)
        value = flat
    out = openai_wire.messages(value)
    for i, m in enumerate(out):
        if m.role not in ROLES and not (m.role == "tool" and m.tool_call_id):  # a tool_result
            raise EdgeError.bad_request(
                f"'messages[{i}].role' must be one of assistant, system, user; got '{m.role}'",
                param=f"messages[{i}].role")
        if any(p.type != "text" for p in m.parts):
            raise EdgeError.bad_request(
                f"'messages[{i}].content' may hold only parts of type 'text', 'tool_use' and "
                "'tool_result'", param=f"messages[{i}].content")
    return out


def _response_format(p: Fields) -> pb.ResponseFormat | None:
    json_output = _either(p.bool, "json_output", "jsonOutput")
    schema_field = "json_schema" if p.get("json_schema") is not None else "jsonSchema"
    schema = _either(p.obj, "json_schema", "jsonSchema")
    if schema is not None:
        check_nesting(schema.data, f"'parameters.{schema_field}'")
        rf = pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_SCHEMA)
        inner = schema.data.get("schema")
        if isinstance(inner, dict):  # OpenAI's wrapper: {"name", "schema"}
            rf.json_schema.update(inner)
            rf.schema_name = schema.str("name") or ""
        elif inner is not None:
            raise EdgeError.bad_request(f"'parameters.{schema_field}.schema' must be an object",
                                        param=f"parameters.{schema_field}.schema")
        else:
            rf.json_schema.update(schema.data)
        return rf
    if json_output:
        return pb.ResponseFormat(type=pb.ResponseFormat.TYPE_JSON_OBJECT)
    return None


def _filters(f: Fields) -> None:
    """Filters select documents for retrieval, which the gateway does not do: checked only."""
    filters = f.obj("filters")
    if filters is None:
        return
    kind = filters.str("documents_classification")
    if kind is not None and kind not in CLASSIFICATIONS:
        raise EdgeError.bad_request(
            "'filters.documents_classification' must be one of all, confidential, external, "
            f"internal; got {kind[:40]!r}", param="filters.documents_classification")
    tags = filters.list("documents_tags")
    if tags is not None and not all(isinstance(t, str) for t in tags):
        raise EdgeError.bad_request("'filters.documents_tags' must be an array of strings",
                                    param="filters.documents_tags")


def chat_request(body: dict[str, Any]) -> tuple[pb.ChatRequest, ChatOptions]:
    f = Fields(body)
    req = pb.ChatRequest(model=f.req_str("model"), messages=_messages(body.get("messages")))
    p = f.obj("parameters") or Fields({}, "parameters.")
    params = req.params
    temperature = p.float("temperature", 0, 2)
    params.temperature = DEFAULT_TEMPERATURE if temperature is None else temperature
    max_tokens = _either(p.int, "max_tokens", "maxTokens", 1)
    params.max_tokens = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    top_p = _either(p.float, "top_p", "topP", 0, 1)
    params.top_p = DEFAULT_TOP_P if top_p is None else top_p
    if (v := _either(p.float, "frequency_penalty", "frequencyPenalty", -2, 2)) is not None:
        params.frequency_penalty = v
    if (v := _either(p.float, "presence_penalty", "presencePenalty", -2, 2)) is not None:
        params.presence_penalty = v
    if (stop := p.str_or_list("stop")) is not None:
        if len(stop) > 16:
            raise EdgeError.bad_request("'parameters.stop' may hold at most 16 sequences",
                                        param="parameters.stop")
        params.stop.extend(stop)
    if (rf := _response_format(p)) is not None:
        req.response_format.CopyFrom(rf)
    if (user := _either(p.str, "end_user_id", "endUserId")) is not None:
        req.end_user = user
    if body.get("tools") is not None:
        req.tools.extend(openai_wire.tools(body["tools"]))
    if body.get("tool_choice") is not None:
        choice = openai_wire.tool_choice(body["tool_choice"])
        if choice is None:
            raise EdgeError.bad_request(
                "'tool_choice' must be 'none', 'auto', 'required' or a named function",
                param="tool_choice")
        req.tool_choice.CopyFrom(choice)
    _filters(f)
    include = _either(p.bool, "include_usage", "includeUsage")
    # `stream` belongs in `parameters`; the seed's streaming example also lists it beside `model`.
    stream = p.bool("stream")
    if stream is None:
        stream = f.bool("stream", False)
    opts = ChatOptions(bool(stream), True if include is None else include)
    req.include_usage = opts.include_usage
    return req, opts


def usage_json(u: pb.Usage) -> dict[str, int]:
    return {"inputTokens": u.prompt_tokens, "outputTokens": u.completion_tokens,
            "totalTokens": u.total_tokens or u.prompt_tokens + u.completion_tokens}


def _tool_input(arguments: str) -> Any:
    """A call's arguments as JSON; the text itself when the model wrote invalid JSON."""
    try:
        return orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return arguments


def _content(m: pb.ChatMessage) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if m.content or not m.tool_calls:
        parts.append({"type": "text", "text": m.content})
    parts.extend({"type": "tool_use", "id": t.id, "name": t.function.name,
                  "input": _tool_input(t.function.arguments)} for t in m.tool_calls)
    return parts


def chat_response(resp: pb.ChatResponse) -> dict[str, Any]:
    choice = resp.choices[0] if resp.choices else pb.ChatChoice()
    return {
        "schema": RESPONSE_SCHEMA,
        "message": {
            "role": choice.message.role or "assistant",
            "content": _content(choice.message),
        },
        "model": resp.model,
        "usage": usage_json(resp.usage),
        "stop_reason": stop_reason(choice.finish_reason),
        "created": resp.created or int(time.time()),
    }


def error_json(err: EdgeError, request_id: str) -> dict[str, Any]:
    return {
        "schema": ERROR_SCHEMA,
        "error": {"type": err.type, "code": err.code, "message": err.message,
                  "param": err.param},
        "request_id": request_id,
    }


class ChatEncoder:
    """ChatChunk → ``inference.response.chunk.v1`` frames, then the usage chunk (when asked) and
    ``[DONE]``."""

    __slots__ = ("include_usage", "state")

    def __init__(self, state: RequestState, include_usage: bool) -> None:
        self.state = state
        self.include_usage = include_usage

    def encode(self, c: pb.ChatChunk) -> bytes:
        created = c.created or int(time.time())
        data = b""
        for ch in c.choices:
            if ch.index == 0 and ch.delta.content:
                data += frame(orjson.dumps({"schema": CHUNK_SCHEMA, "created": created,
                                            "model_id": c.model, "content": ch.delta.content}))
            if ch.index == 0:
                for t in ch.delta.tool_calls:
                    fragment: dict[str, Any] = {"index": t.index}
                    if t.HasField("id"):
                        fragment["id"] = t.id
                    if t.function.HasField("name"):
                        fragment["name"] = t.function.name
                    fragment["partial_json"] = t.function.arguments
                    data += frame(orjson.dumps({"schema": CHUNK_SCHEMA, "created": created,
                                                "model_id": c.model, "content": "",
                                                "tool_use": fragment}))
        if c.HasField("usage"):
            openai_wire.record_usage(self.state, c.usage)
            if self.include_usage:
                data += frame(orjson.dumps({
                    "schema": USAGE_CHUNK_SCHEMA, "usage": usage_json(c.usage),
                    "created": created, "model_id": c.model, "content": "",
                }))
        return data

    def end(self) -> bytes:
        return DONE
