"""Pure translation between the OpenAI HTTP format and the core's messages (edge side).

No I/O: the openai dialect's handlers call these, other dialects that speak OpenAI bodies (oicm,
endpoint, mlflow, tgi's Messages API) reuse them, and the tests run them on recorded payloads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import struct_pb2

from http_edge.body import INT64_MAX, INT64_MIN, Fields, check_nesting
from http_edge.errors import EdgeError
from http_edge.sse import DONE, frame
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb

# system_fingerprint when the upstream names none.
FINGERPRINT = "inference-gateway"

ROLES = frozenset({"system", "user", "assistant", "tool", "developer", "function"})

_SAMPLING_KEYS = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
    "frequency_penalty", "seed", "n", "top_k", "repetition_penalty", "do_sample",
})
_CHAT_KEYS = _SAMPLING_KEYS | {"model", "messages", "stream", "stream_options", "response_format",
                               "user", "chat_template"}
_COMPLETION_KEYS = _SAMPLING_KEYS | {"model", "prompt", "stream", "stream_options", "user", "echo"}
_FORMATS = {
    "text": pb.ResponseFormat.TYPE_TEXT,
    "json_object": pb.ResponseFormat.TYPE_JSON_OBJECT,
    "json_schema": pb.ResponseFormat.TYPE_JSON_SCHEMA,
    "json": pb.ResponseFormat.TYPE_JSON_OBJECT,  # TGI's name
}


@dataclass(frozen=True, slots=True)
class StreamOptions:
    stream: bool
    include_usage: bool


def sampling(f: Fields) -> pb.SamplingParams:
    """OpenAI sampling fields → SamplingParams (absent and null fields stay unset)."""
    p = pb.SamplingParams()
    if (v := f.float("temperature", 0, 2)) is not None:
        p.temperature = v
    if (v := f.float("top_p", 0, 1)) is not None:
        p.top_p = v
    max_tokens = f.int("max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = f.int("max_tokens", 1)
    if max_tokens is not None:
        p.max_tokens = max_tokens
    if (stop := f.str_or_list("stop")) is not None:
        if len(stop) > 16:
            raise EdgeError.bad_request("'stop' may hold at most 16 sequences", param="stop")
        p.stop.extend(stop)
    if (v := f.float("presence_penalty", -2, 2)) is not None:
        p.presence_penalty = v
    if (v := f.float("frequency_penalty", -2, 2)) is not None:
        p.frequency_penalty = v
    if (i := f.int("seed", INT64_MIN, INT64_MAX)) is not None:
        p.seed = i
    if (i := f.int("n", 1, 128)) is not None:
        p.n = i
    if (i := f.int("top_k", 0)) is not None:
        p.top_k = i
    if (v := f.float("repetition_penalty", 0)) is not None:
        p.repetition_penalty = v
    if (b := f.bool("do_sample")) is not None:
        p.do_sample = b
    return p


def _extra(body: dict[str, Any], known: frozenset[str]) -> struct_pb2.Struct | None:
    extra = {k: v for k, v in body.items() if k not in known and v is not None}
    if not extra:
        return None
    check_nesting(extra, "a passthrough field")
    s = struct_pb2.Struct()
    s.update(extra)
    return s


def _content_parts(value: list[Any], path: str) -> list[pb.ContentPart]:
    parts = []
    for j, part in enumerate(value):
        where = f"{path}[{j}]"
        if not isinstance(part, dict):
            raise EdgeError.bad_request(f"'{where}' must be an object", param=where)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise EdgeError.bad_request(f"'{where}.text' must be a string",
                                            param=f"{where}.text")
            parts.append(pb.ContentPart(type="text", text=text))
        elif kind == "image_url":
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            if not isinstance(url, str):
                raise EdgeError.bad_request(f"'{where}.image_url.url' must be a string",
                                            param=f"{where}.image_url")
            parts.append(pb.ContentPart(type="image_url", image_url=url))
        else:
            raise EdgeError.bad_request(
                f"'{where}.type' must be 'text' or 'image_url'; got {kind!r}", param=f"{where}.type")
    return parts


def messages(value: Any, path: str = "messages") -> list[pb.ChatMessage]:
    """OpenAI messages → ChatMessage list (content as a string or a list of parts)."""
    if value is None:
        raise EdgeError.bad_request(f"'{path}' is required", param=path)
    if not isinstance(value, list):
        raise EdgeError.bad_request(f"'{path}' must be an array of messages", param=path)
    if not value:
        raise EdgeError.bad_request(f"'{path}' must hold at least one message", param=path)
    out = []
    for i, m in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(m, dict):
            raise EdgeError.bad_request(f"'{where}' must be an object", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise EdgeError.bad_request(
                f"'{where}.role' must be one of {', '.join(sorted(ROLES))}; got {role!r}",
                param=f"{where}.role")
        msg = pb.ChatMessage(role=role)
        content = m.get("content")
        if isinstance(content, str):
            msg.content = content
        elif isinstance(content, list):
            msg.parts.extend(_content_parts(content, f"{where}.content"))
        elif content is not None:
            raise EdgeError.bad_request(
                f"'{where}.content' must be a string or an array of content parts",
                param=f"{where}.content")
        name = m.get("name")
        if isinstance(name, str):
            msg.name = name
        out.append(msg)
    return out


def stream_options(f: Fields) -> StreamOptions:
    stream = bool(f.bool("stream", False))
    opts = f.obj("stream_options")
    include = bool(opts.bool("include_usage", False)) if opts is not None else False
    return StreamOptions(stream, include)


def chat_request(body: dict[str, Any]) -> tuple[pb.ChatRequest, StreamOptions]:
    f = Fields(body)
    req = pb.ChatRequest(model=f.req_str("model"), messages=messages(body.get("messages")))
    req.params.CopyFrom(sampling(f))
    rf = f.obj("response_format")
    if rf is not None:
        kind = rf.req_str("type")
        if kind not in _FORMATS:
            raise EdgeError.bad_request(
                f"'response_format.type' must be one of {', '.join(_FORMATS)}; got {kind!r}",
                param="response_format.type")
        req.response_format.type = _FORMATS[kind]
        js = rf.obj("json_schema")
        if js is not None:
            schema = js.get("schema")
            if not isinstance(schema, dict):
                raise EdgeError.bad_request("'response_format.json_schema.schema' must be an object",
                                            param="response_format.json_schema.schema")
            check_nesting(schema, "'response_format.json_schema.schema'")
            req.response_format.json_schema.update(schema)
            req.response_format.schema_name = js.str("name") or ""
        elif kind in ("json_object", "json") and isinstance(rf.get("value"), dict):
            # TGI's grammar form, which huggingface_hub sends for a JSON schema.
            check_nesting(rf.get("value"), "'response_format.value'")
            req.response_format.type = pb.ResponseFormat.TYPE_JSON_SCHEMA
            req.response_format.json_schema.update(rf.get("value"))
    if (user := f.str("user")) is not None:
        req.end_user = user
    if (template := f.str("chat_template")) is not None:
        req.chat_template = template
    opts = stream_options(f)
    req.include_usage = opts.include_usage
    if (extra := _extra(body, _CHAT_KEYS)) is not None:
        req.extra.CopyFrom(extra)
    return req, opts


def completion_request(body: dict[str, Any]) -> tuple[pb.CompletionRequest, StreamOptions]:
    f = Fields(body)
    model = f.req_str("model")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise EdgeError.bad_request(
            "'prompt' must be a string (or an array of one string)" if prompt is not None
            else "'prompt' is required", param="prompt")
    req = pb.CompletionRequest(model=model, prompt=prompt)
    req.params.CopyFrom(sampling(f))
    if (user := f.str("user")) is not None:
        req.end_user = user
    req.echo = bool(f.bool("echo", False))
    opts = stream_options(f)
    req.include_usage = opts.include_usage
    if (extra := _extra(body, _COMPLETION_KEYS)) is not None:
        req.extra.CopyFrom(extra)
    return req, opts


def usage_json(u: pb.Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }
    if u.estimated:
        out["estimated"] = True
    return out


def chat_response(resp: pb.ChatResponse) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": resp.id or "chatcmpl-gateway",
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": resp.model,
        "choices": [
            {
                "index": c.index,
                "message": {"role": c.message.role or "assistant", "content": c.message.content},
                "logprobs": None,
                "finish_reason": c.finish_reason or "stop",
            }
            for c in resp.choices
        ],
        "usage": usage_json(resp.usage),
    }
    # Always a string: TGI's clients require the field (OpenAI's accept it).
    out["system_fingerprint"] = resp.system_fingerprint or FINGERPRINT
    return out


def completion_response(resp: pb.CompletionResponse) -> dict[str, Any]:
    return {
        "id": resp.id or "cmpl-gateway",
        "object": "text_completion",
        "created": resp.created or int(time.time()),
        "model": resp.model,
        "choices": [
            {"index": c.index, "text": c.text, "logprobs": None,
             "finish_reason": c.finish_reason or "stop"}
            for c in resp.choices
        ],
        "usage": usage_json(resp.usage),
    }


def model_json(m: pb.Model) -> dict[str, Any]:
    from gateway_common.config import TASKS

    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": m.owned_by,
        "task": TASKS[m.task - 1] if 0 < m.task <= len(TASKS) else "unknown",
        "tasks": [TASKS[t - 1] for t in m.tasks if 0 < t <= len(TASKS)],
    }


def record_usage(state: RequestState, usage: pb.Usage) -> None:
    state.prompt_tokens = usage.prompt_tokens
    state.completion_tokens = usage.completion_tokens


class _StreamEncoder:
    """What the chat and completion encoders share: the usage chunk at the end, ``[DONE]``."""

    __slots__ = ("include_usage", "state")

    def __init__(self, state: RequestState, include_usage: bool) -> None:
        self.state = state
        self.include_usage = include_usage

    def _chunk(self, c: Any, choices: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def _usage(self, c: pb.ChatChunk | pb.CompletionChunk) -> bytes:
        """Record the stream's usage; its own chunk when the client asked for it."""
        record_usage(self.state, c.usage)
        if not self.include_usage:
            return b""
        usage_chunk = self._chunk(c, [])
        usage_chunk["usage"] = usage_json(c.usage)
        return frame(orjson.dumps(usage_chunk))

    def end(self) -> bytes:
        return DONE


class ChatEncoder(_StreamEncoder):
    """ChatChunk → ``chat.completion.chunk`` SSE frames, the usage chunk when asked, ``[DONE]``.

    The fields around ``choices`` are the same in every chunk of a stream: their JSON is made once
    and kept (``_head``/``_tail``), so each chunk only serializes its choices.
    """

    __slots__ = ("_head", "_key", "_tail")

    def __init__(self, state: RequestState, include_usage: bool) -> None:
        super().__init__(state, include_usage)
        self._key: tuple[str, int, str, str] | None = None
        self._head = self._tail = b""

    def _chunk(self, c: pb.ChatChunk, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": c.id, "object": "chat.completion.chunk", "created": c.created,
            "model": c.model, "choices": choices,
            "system_fingerprint": c.system_fingerprint or FINGERPRINT,
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def _frame(self, c: pb.ChatChunk, choices: list[dict[str, Any]]) -> bytes:
        """``frame(orjson.dumps(self._chunk(c, choices)))``, byte for byte."""
        key = (c.id, c.created, c.model, c.system_fingerprint)
        if key != self._key:
            whole = orjson.dumps(self._chunk(c, []))
            cut = whole.index(b'"choices":[]') + len(b'"choices":')
            self._head, self._tail = b"data: " + whole[:cut], whole[cut + 2:] + b"\n\n"
            self._key = key
        return self._head + orjson.dumps(choices) + self._tail

    def encode(self, c: pb.ChatChunk) -> bytes:
        data = b""
        received = c.choices
        if received:
            choices = []
            for i in range(len(received)):  # indexing: iterating a upb container costs more
                ch = received[i]
                d = ch.delta
                content, finish = d.content, ch.finish_reason
                # Role and tool_calls in every delta: TGI's clients require both keys.
                delta: dict[str, Any] = {"role": d.role or "assistant"}
                if content or not finish:
                    delta["content"] = content
                delta["tool_calls"] = None
                choices.append({"index": ch.index, "delta": delta, "logprobs": None,
                                "finish_reason": finish or None})
            data = self._frame(c, choices)
        if c.HasField("usage"):
            data += self._usage(c)
        return data


class CompletionEncoder(_StreamEncoder):
    """CompletionChunk → ``text_completion`` SSE frames, the usage chunk when asked, ``[DONE]``."""

    __slots__ = ()

    def _chunk(self, c: pb.CompletionChunk, choices: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": c.id, "object": "text_completion", "created": c.created,
                               "model": c.model, "choices": choices}
        if self.include_usage:
            out["usage"] = None
        return out

    def encode(self, c: pb.CompletionChunk) -> bytes:
        data = b""
        if c.choices:
            choices = [{"index": ch.index, "text": ch.text, "logprobs": None,
                        "finish_reason": ch.finish_reason or None} for ch in c.choices]
            data = frame(orjson.dumps(self._chunk(c, choices)))
        if c.HasField("usage"):
            data += self._usage(c)
        return data
