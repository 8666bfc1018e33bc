"""The mock provider's tool calls and log-probabilities: deterministic, shaped like OpenAI's.

A chat request that offers function tools gets calls when ``tool_choice`` names a function, when it
is ``required`` (the first function), or, with ``auto`` or no choice, when the last user message
names functions (one call each, in the order offered; one only with ``parallel_tool_calls: false``).
A request whose last message is a tool result is answered with text, as a model would after its
tools ran. Arguments fill each required property (every property when none is required) with a
value of its JSON-schema type: the first ``enum`` value, ``"mock"``, ``1``, ``true``, ``[]``, ``{}``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import orjson

from gateway_common.structs import struct_to_dict
from inference_gateway.v1 import inference_pb2 as pb

_SAMPLE: dict[str, Any] = {"string": "mock", "number": 1, "integer": 1, "boolean": True,
                           "array": [], "object": {}}
# Size of the streamed pieces of a call's arguments.
FRAGMENT_CHARS = 8


def _arguments(fn: pb.FunctionDefinition) -> str:
    schema = struct_to_dict(fn.parameters) if fn.HasField("parameters") else {}
    props: Any = schema.get("properties")
    if not isinstance(props, dict):
        props = {}
    wanted: Any = schema.get("required") or list(props)
    args: dict[str, Any] = {}
    for name in wanted if isinstance(wanted, list) else []:
        prop: Any = props.get(name) if isinstance(name, str) else None
        if not isinstance(prop, dict):
            prop = {}
        enum = prop.get("enum")
        if isinstance(enum, list) and enum:
            args[name] = enum[0]
        else:
            kind = prop.get("type")
            args[name] = _SAMPLE.get(kind if isinstance(kind, str) else "string", "mock")
    return orjson.dumps(args).decode()


def _named_in(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def calls_for(req: pb.ChatRequest) -> list[pb.ToolCall]:
    """The calls the mock model makes for ``req`` (none: it answers with text)."""
    functions = [t.function for t in req.tools if t.type == "function" and t.HasField("function")]
    if not functions or not req.messages or req.messages[-1].role == "tool":
        return []
    kind = req.tool_choice.WhichOneof("choice") if req.HasField("tool_choice") else None
    if kind == "mode" and req.tool_choice.mode == "none":
        return []
    if kind == "function":
        chosen = [f for f in functions if f.name == req.tool_choice.function][:1]
    else:
        last = next((m for m in reversed(req.messages) if m.role == "user"), None)
        text = "" if last is None else (
            last.content if not last.parts else " ".join(p.text for p in last.parts))
        chosen = [f for f in functions if _named_in(text, f.name)]
        if not chosen and kind == "mode" and req.tool_choice.mode == "required":
            chosen = functions[:1]
    if req.HasField("parallel_tool_calls") and not req.parallel_tool_calls:
        chosen = chosen[:1]
    calls = []
    for i, fn in enumerate(chosen):
        call_id = "call_" + hashlib.sha256(f"{fn.name}:{i}".encode()).hexdigest()[:24]
        calls.append(pb.ToolCall(index=i, id=call_id, type="function", function=pb.FunctionCall(
            name=fn.name, arguments=_arguments(fn))))
    return calls


def fragments(calls: list[pb.ToolCall]) -> list[pb.ToolCall]:
    """The calls as stream fragments: each call's header (id, type, name, empty arguments), then
    its arguments in pieces; parallel calls interleave, keyed by ``index``."""
    out = [pb.ToolCall(index=c.index, id=c.id, type=c.type,
                       function=pb.FunctionCall(name=c.function.name, arguments=""))
           for c in calls]
    pieces = [[c.function.arguments[i:i + FRAGMENT_CHARS]
               for i in range(0, len(c.function.arguments), FRAGMENT_CHARS)] for c in calls]
    for step in range(max((len(p) for p in pieces), default=0)):
        for call, parts in zip(calls, pieces, strict=True):
            if step < len(parts):
                out.append(pb.ToolCall(index=call.index,
                                       function=pb.FunctionCall(arguments=parts[step])))
    return out


def _logprob(token: str) -> float:
    return -round(int.from_bytes(hashlib.sha256(token.encode()).digest()[:2], "big") / 65536, 4)


def logprobs(pieces: list[str], top: int) -> list[pb.TokenLogprob]:
    """Made-up, deterministic log-probabilities of each piece, with ``top`` alternatives."""
    out = []
    for piece in pieces:
        entry = pb.TokenLogprob(token=piece, logprob=_logprob(piece), utf8=piece.encode())
        for k in range(top):
            alt = piece if k == 0 else f"{piece.strip()}{k}"
            entry.top_logprobs.add(token=alt, logprob=_logprob(piece) - k, utf8=alt.encode())
        out.append(entry)
    return out
