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

from gateway_common.openai_json import (
    chat_logprobs_json,
    completion_logprobs_json,
    delta_json,
    message_json,
    usage_json,
)
from gateway_common.structs import struct_to_dict, to_struct
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
    "frequency_penalty", "seed", "n", "top_k", "repetition_penalty", "do_sample", "logit_bias",
})
# Typed request fields; every other field travels in `extra`. `response_format` and `tool_choice`
# in forms the proto does not type travel there too.
_CHAT_KEYS = _SAMPLING_KEYS | {"model", "messages", "stream", "stream_options", "user",
                               "chat_template", "tools", "parallel_tool_calls", "logprobs",
                               "top_logprobs"}
_COMPLETION_KEYS = _SAMPLING_KEYS | {"model", "prompt", "stream", "stream_options", "user", "echo",
                                     "logprobs"}
_MESSAGE_KEYS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "refusal",
                           "reasoning_content", "reasoning"})
_TOOL_CHOICE_MODES = frozenset({"none", "auto", "required"})
_TOOL_KEYS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "logprobs", "top_logprobs"})
# A message with only these fields takes the short path.
_PLAIN_MESSAGE_KEYS = frozenset({"role", "content", "name"})
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
    if (i := f.int("max_tokens", 1)) is not None:
        p.max_tokens = i
    if (i := f.int("max_completion_tokens", 1)) is not None:
        p.max_completion_tokens = i
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
    if "logit_bias" in f.data and (bias := f.get("logit_bias")) is not None:
        if not isinstance(bias, dict):
            raise EdgeError.bad_request("'logit_bias' must be an object of token ids to numbers",
                                        param="logit_bias")
        for token, value in bias.items():
            if not isinstance(value, int | float) or isinstance(value, bool) \
                    or not -100 <= value <= 100:
                raise EdgeError.bad_request("'logit_bias' values must be numbers from -100 to 100",
                                            param="logit_bias")
            p.logit_bias[token] = float(value)
    return p


def _extra(body: dict[str, Any], known: frozenset[str] | set[str]) -> struct_pb2.Struct | None:
    """The non-null fields of ``body`` outside ``known``, to pass through as they are."""
    extra = {k: v for k, v in body.items() if k not in known and v is not None}
    if not extra:
        return None
    check_nesting(extra, "a passthrough field")
    return to_struct(extra)


def _str_field(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise EdgeError.bad_request(f"'{where}' must be a string", param=where)
    return value


def _content_parts(value: list[Any], path: str) -> list[pb.ContentPart]:
    """Content parts: text, image_url (with detail), input_audio typed; other types (vLLM's
    video_url, audio_url, ...) pass through with their fields."""
    parts = []
    for j, part in enumerate(value):
        where = f"{path}[{j}]"
        if not isinstance(part, dict):
            raise EdgeError.bad_request(f"'{where}' must be an object", param=where)
        kind = part.get("type")
        if not isinstance(kind, str) or not kind:
            raise EdgeError.bad_request(f"'{where}.type' must be a string such as 'text' or"
                                        " 'image_url'", param=f"{where}.type")
        out = pb.ContentPart(type=kind)
        known: set[str] = {"type"}
        image = part.get("image_url")
        if kind == "text":
            out.text = _str_field(part.get("text"), f"{where}.text")
            known.add("text")
        elif kind == "image_url" and (isinstance(image, str) or (
                isinstance(image, dict) and image.keys() <= {"url", "detail"})):
            url = image.get("url") if isinstance(image, dict) else image
            out.image_url = _str_field(url, f"{where}.image_url.url")
            if isinstance(image, dict) and image.get("detail") is not None:
                out.detail = _str_field(image["detail"], f"{where}.image_url.detail")
            known.add("image_url")
        elif kind == "input_audio" and isinstance(audio := part.get("input_audio"), dict) \
                and audio.keys() <= {"data", "format"}:
            out.input_audio.data = _str_field(audio.get("data"), f"{where}.input_audio.data")
            out.input_audio.format = _str_field(audio.get("format", ""),
                                                f"{where}.input_audio.format")
            known.add("input_audio")
        elif kind == "image_url":
            raise EdgeError.bad_request(f"'{where}.image_url.url' must be a string",
                                        param=f"{where}.image_url")
        if (extra := _extra(part, known)) is not None:
            out.extra.CopyFrom(extra)
        parts.append(out)
    return parts


def _tool_calls(value: Any, where: str) -> list[pb.ToolCall]:
    if not isinstance(value, list):
        raise EdgeError.bad_request(f"'{where}' must be an array of tool calls", param=where)
    calls = []
    for i, call in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise EdgeError.bad_request(f"'{at}' must be an object", param=at)
        out = pb.ToolCall(index=i)
        if call.get("id") is not None:
            out.id = _str_field(call["id"], f"{at}.id")
        if call.get("type") is not None:
            out.type = _str_field(call["type"], f"{at}.type")
        fn = call.get("function")
        if fn is not None:
            if not isinstance(fn, dict):
                raise EdgeError.bad_request(f"'{at}.function' must be an object",
                                            param=f"{at}.function")
            out.function.SetInParent()
            if fn.get("name") is not None:
                out.function.name = _str_field(fn["name"], f"{at}.function.name")
            if fn.get("arguments") is not None:
                out.function.arguments = _str_field(fn["arguments"], f"{at}.function.arguments")
        if (extra := _extra(call, {"id", "type", "function"})) is not None:
            out.extra.CopyFrom(extra)
        calls.append(out)
    return calls


def _message(m: Any, where: str) -> pb.ChatMessage:
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
    if m.keys() <= _PLAIN_MESSAGE_KEYS:
        return msg
    if m.get("tool_calls") is not None:
        msg.tool_calls.extend(_tool_calls(m["tool_calls"], f"{where}.tool_calls"))
    if m.get("tool_call_id") is not None:
        msg.tool_call_id = _str_field(m["tool_call_id"], f"{where}.tool_call_id")
    for field in ("refusal", "reasoning_content", "reasoning"):
        if m.get(field) is not None:
            setattr(msg, field, _str_field(m[field], f"{where}.{field}"))
    if (extra := _extra(m, _MESSAGE_KEYS)) is not None:
        msg.extra.CopyFrom(extra)
    return msg


def messages(value: Any, path: str = "messages") -> list[pb.ChatMessage]:
    """OpenAI messages → ChatMessage list (content as a string or a list of parts, tool calls,
    tool results; fields the proto does not type pass through)."""
    if value is None:
        raise EdgeError.bad_request(f"'{path}' is required", param=path)
    if not isinstance(value, list):
        raise EdgeError.bad_request(f"'{path}' must be an array of messages", param=path)
    if not value:
        raise EdgeError.bad_request(f"'{path}' must hold at least one message", param=path)
    return [_message(m, f"{path}[{i}]") for i, m in enumerate(value)]


def tools(value: Any) -> list[pb.Tool]:
    if not isinstance(value, list):
        raise EdgeError.bad_request("'tools' must be an array of tools", param="tools")
    tools = []
    for i, tool in enumerate(value):
        at = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise EdgeError.bad_request(f"'{at}' must be an object", param=at)
        out = pb.Tool(type=_str_field(tool.get("type", "function"), f"{at}.type"))
        known = {"type"}
        fn = tool.get("function")
        if isinstance(fn, dict) and fn.keys() <= {"name", "description", "parameters", "strict"}:
            known.add("function")
            f = out.function
            f.name = _str_field(fn.get("name"), f"{at}.function.name")
            if fn.get("description") is not None:
                f.description = _str_field(fn["description"], f"{at}.function.description")
            params = fn.get("parameters")
            if params is not None:
                if not isinstance(params, dict):
                    raise EdgeError.bad_request(f"'{at}.function.parameters' must be a JSON schema"
                                                " object", param=f"{at}.function.parameters")
                check_nesting(params, f"'{at}.function.parameters'")
                f.parameters.update(params)
            if fn.get("strict") is not None:
                if not isinstance(fn["strict"], bool):
                    raise EdgeError.bad_request(f"'{at}.function.strict' must be a boolean",
                                                param=f"{at}.function.strict")
                f.strict = fn["strict"]
        elif out.type == "function":
            raise EdgeError.bad_request(f"'{at}.function' must be an object with a 'name'",
                                        param=f"{at}.function")
        if (extra := _extra(tool, known)) is not None:
            out.extra.CopyFrom(extra)
        tools.append(out)
    return tools


def tool_choice(value: Any) -> pb.ToolChoice | None:
    """The typed forms of ``tool_choice``; None for a form that passes through as it is."""
    if isinstance(value, str):
        if value not in _TOOL_CHOICE_MODES:
            raise EdgeError.bad_request(
                "'tool_choice' must be 'none', 'auto', 'required' or a named function",
                param="tool_choice")
        return pb.ToolChoice(mode=value)
    if isinstance(value, dict) and value.get("type") == "function" and value.keys() == {
            "type", "function"} and isinstance(fn := value["function"], dict) \
            and fn.keys() == {"name"} and isinstance(fn["name"], str):
        return pb.ToolChoice(function=fn["name"])
    if not isinstance(value, dict):
        raise EdgeError.bad_request(
            "'tool_choice' must be 'none', 'auto', 'required' or a named function",
            param="tool_choice")
    return None


def stream_options(f: Fields) -> StreamOptions:
    stream = bool(f.bool("stream", False))
    opts = f.obj("stream_options")
    include = bool(opts.bool("include_usage", False)) if opts is not None else False
    return StreamOptions(stream, include)


def _response_format(rf: Fields, req: pb.ChatRequest) -> bool:
    """The typed forms of ``response_format``; False for a form that passes through as it is."""
    kind = rf.req_str("type")
    if kind not in _FORMATS:
        return False
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
        req.response_format.schema_description = js.str("description") or ""
        if (strict := js.bool("strict")) is not None:
            req.response_format.schema_strict = strict
    elif kind in ("json_object", "json") and isinstance(rf.get("value"), dict):
        # TGI's grammar form, which huggingface_hub sends for a JSON schema.
        check_nesting(rf.get("value"), "'response_format.value'")
        req.response_format.type = pb.ResponseFormat.TYPE_JSON_SCHEMA
        req.response_format.json_schema.update(rf.get("value"))
    return True


def _tool_fields(f: Fields, body: dict[str, Any], req: pb.ChatRequest, known: set[str]) -> None:
    """The tool and log-probability fields, when the body has any (``known`` learns the forms
    of ``tool_choice`` the proto types)."""
    if body.get("tools") is not None:
        req.tools.extend(tools(body["tools"]))
    if body.get("tool_choice") is not None:
        choice = tool_choice(body["tool_choice"])
        if choice is not None:
            req.tool_choice.CopyFrom(choice)
            known.add("tool_choice")
    if (b := f.bool("parallel_tool_calls")) is not None:
        req.parallel_tool_calls = b
    if (b := f.bool("logprobs")) is not None:
        req.logprobs = b
    if (i := f.int("top_logprobs", 0, 20)) is not None:
        req.top_logprobs = i


def chat_request(body: dict[str, Any]) -> tuple[pb.ChatRequest, StreamOptions]:
    f = Fields(body)
    req = pb.ChatRequest(model=f.req_str("model"), messages=messages(body.get("messages")))
    req.params.CopyFrom(sampling(f))
    known: frozenset[str] | set[str] = _CHAT_KEYS
    if not body.keys().isdisjoint(_TOOL_KEYS):
        known = set(_CHAT_KEYS)
        _tool_fields(f, body, req, known)
    rf = f.obj("response_format")
    if rf is not None and _response_format(rf, req):
        known = {*known, "response_format"}
    if (user := f.str("user")) is not None:
        req.end_user = user
    if (template := f.str("chat_template")) is not None:
        req.chat_template = template
    opts = stream_options(f)
    req.include_usage = opts.include_usage
    if not body.keys() <= known and (extra := _extra(body, known)) is not None:
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
    if (echo := f.bool("echo")) is not None:
        req.echo = echo
    if (i := f.int("logprobs", 0, 20)) is not None:
        req.logprobs = i
    opts = stream_options(f)
    req.include_usage = opts.include_usage
    if (extra := _extra(body, _COMPLETION_KEYS)) is not None:
        req.extra.CopyFrom(extra)
    return req, opts


def _choice_json(c: pb.ChatChoice) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": c.index,
        "message": message_json(c.message, "assistant"),
        "logprobs": chat_logprobs_json(c.logprobs) if c.HasField("logprobs") else None,
        "finish_reason": c.finish_reason or "stop",
    }
    if c.HasField("extra"):
        out.update(struct_to_dict(c.extra))
    return out


def chat_response(resp: pb.ChatResponse) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": resp.id or "chatcmpl-gateway",
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": resp.model,
        "choices": [_choice_json(c) for c in resp.choices],
        "usage": usage_json(resp.usage),
    }
    # Always a string: TGI's clients require the field (OpenAI's accept it).
    out["system_fingerprint"] = resp.system_fingerprint or FINGERPRINT
    if resp.HasField("extra"):
        out.update(struct_to_dict(resp.extra))
    return out


def _completion_choice_json(c: pb.CompletionChoice, finish: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": c.index, "text": c.text,
        "logprobs": completion_logprobs_json(c.logprobs) if c.HasField("logprobs") else None,
        "finish_reason": finish,
    }
    if c.HasField("extra"):
        out.update(struct_to_dict(c.extra))
    return out


def completion_response(resp: pb.CompletionResponse) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": resp.id or "cmpl-gateway",
        "object": "text_completion",
        "created": resp.created or int(time.time()),
        "model": resp.model,
        "choices": [_completion_choice_json(c, c.finish_reason or "stop") for c in resp.choices],
        "usage": usage_json(resp.usage),
    }
    if resp.system_fingerprint:
        out["system_fingerprint"] = resp.system_fingerprint
    if resp.HasField("extra"):
        out.update(struct_to_dict(resp.extra))
    return out


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


_TEXT = pb.ChatChunk.SHAPE_TEXT
_TOOL_FRAGMENTS = pb.ChatChunk.SHAPE_TOOL_FRAGMENTS


def _fragment_json(t: pb.ToolCall) -> dict[str, Any]:
    """A tool-call fragment of a SHAPE_TOOL_FRAGMENTS chunk (no unknown fields by its promise):
    id, type and name only where set (the call's first fragment), the arguments piece always."""
    out: dict[str, Any] = {"index": t.index}
    if tid := t.id:
        out["id"] = tid
    if kind := t.type:
        out["type"] = kind
    fn = t.function
    name = fn.name
    out["function"] = {"name": name, "arguments": fn.arguments} if name else {
        "arguments": fn.arguments}
    return out


def _rich_delta(d: pb.ChatDelta) -> bool:
    return (d.HasField("reasoning_content") or d.HasField("reasoning") or d.HasField("refusal")
            or d.HasField("extra"))


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
        if not c.choices and c.HasField("extra"):
            usage_chunk.update(struct_to_dict(c.extra))
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

    @staticmethod
    def _rich_choice(ch: pb.ChatChunkChoice) -> dict[str, Any]:
        """A choice with tool calls, reasoning, refusal, log-probabilities or unknown fields."""
        delta: dict[str, Any] = {"role": ch.delta.role or "assistant", "tool_calls": None}
        delta.update(delta_json(ch.delta))
        out: dict[str, Any] = {
            "index": ch.index, "delta": delta,
            "logprobs": chat_logprobs_json(ch.logprobs) if ch.HasField("logprobs") else None,
            "finish_reason": ch.finish_reason or None,
        }
        if ch.HasField("extra"):
            out.update(struct_to_dict(ch.extra))
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
            shape = c.shape
            choices = []
            for i in range(len(received)):  # indexing: iterating a upb container costs more
                ch = received[i]
                d = ch.delta
                finish = ch.finish_reason
                # Role and tool_calls in every delta: TGI's clients require both keys.
                delta: dict[str, Any] = {"role": d.role or "assistant"}
                if shape == _TEXT:  # the core sets content unless the delta only finishes
                    content = d.content
                    if content or not finish:
                        delta["content"] = content
                    delta["tool_calls"] = None
                elif shape == _TOOL_FRAGMENTS:
                    delta["tool_calls"] = [_fragment_json(t) for t in d.tool_calls]
                elif (d.tool_calls or ch.HasField("logprobs") or _rich_delta(d)
                      or ch.HasField("extra")):
                    choices.append(self._rich_choice(ch))
                    continue
                else:
                    if d.HasField("content"):
                        delta["content"] = d.content
                    delta["tool_calls"] = None
                choices.append({"index": ch.index, "delta": delta, "logprobs": None,
                                "finish_reason": finish or None})
            data = self._frame(c, choices) if shape or not c.HasField("extra") else frame(
                orjson.dumps({**self._chunk(c, choices), **struct_to_dict(c.extra)}))
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
            choices = [_completion_choice_json(ch, ch.finish_reason or None) for ch in c.choices]
            chunk = self._chunk(c, choices)
            if c.HasField("extra"):
                chunk.update(struct_to_dict(c.extra))
            data = frame(orjson.dumps(chunk))
        if c.HasField("usage"):
            data += self._usage(c)
        return data
