"""The openai ChatEncoder's frames are exactly ``data: <the chunk's JSON>\\n\\n`` with the keys in
OpenAI's order, also when it reuses the JSON around ``choices`` from one chunk to the next."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from http_edge.dialects.openai_wire import FINGERPRINT, ChatEncoder
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb


def chunk(cid: str = "chatcmpl-1", model: str = "m", fp: str = "", **choice: Any) -> pb.ChatChunk:
    delta = pb.ChatDelta(role=choice.pop("role", ""))
    if (content := choice.pop("content", None)) is not None:
        delta.content = content
    return pb.ChatChunk(id=cid, created=17, model=model, system_fingerprint=fp,
                        choices=[pb.ChatChunkChoice(delta=delta, **choice)])


def expected(c: pb.ChatChunk, include_usage: bool) -> bytes:
    choices = []
    for ch in c.choices:
        delta: dict[str, Any] = {"role": ch.delta.role or "assistant"}
        if ch.delta.HasField("content"):
            delta["content"] = ch.delta.content
        delta["tool_calls"] = None
        choices.append({"index": ch.index, "delta": delta, "logprobs": None,
                        "finish_reason": ch.finish_reason or None})
    out: dict[str, Any] = {"id": c.id, "object": "chat.completion.chunk", "created": c.created,
                           "model": c.model, "choices": choices,
                           "system_fingerprint": c.system_fingerprint or FINGERPRINT}
    if include_usage:
        out["usage"] = None
    return b"data: " + orjson.dumps(out) + b"\n\n"


@pytest.mark.parametrize("include_usage", [False, True])
def test_frames_are_the_chunks_json(include_usage: bool) -> None:
    stream = [
        chunk(role="assistant", content=""),
        chunk(content="Deep"),
        chunk(content=' "learning" é\n'),
        chunk(cid='other "id"', model="m/2", fp="fp-1", content="x", index=3),  # the head changes
        chunk(cid='other "id"', model="m/2", fp="fp-1", content="y", index=3),
        chunk(finish_reason="stop"),
    ]
    enc = ChatEncoder(RequestState(dialect="openai", request_id="r"), include_usage)
    for c in stream:
        assert enc.encode(c) == expected(c, include_usage)


def test_two_choices_and_the_usage_chunk() -> None:
    c = pb.ChatChunk(id="c", created=1, model="m", choices=[
        pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(content="a")),
        pb.ChatChunkChoice(index=1, delta=pb.ChatDelta(content="b"), finish_reason="length"),
    ], usage=pb.Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5))
    state = RequestState(dialect="openai", request_id="r")
    frames = ChatEncoder(state, True).encode(c)
    first, usage, _ = frames.split(b"\n\n")
    assert first + b"\n\n" == expected(c, True)
    assert orjson.loads(usage[6:])["usage"] == {"prompt_tokens": 2, "completion_tokens": 3,
                                                 "total_tokens": 5}
    assert orjson.loads(usage[6:])["choices"] == []
    assert (state.prompt_tokens, state.completion_tokens) == (2, 3)
