"""Pure translation, on recorded payloads: upstream streams → typed chunks (core), OpenAI bodies ↔
typed messages (edge), and the one error table."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from gateway_core import errors as core_errors
from gateway_core.providers import openai_wire as core_wire
from gateway_core.streams import ChatStreamState, CompletionStreamState
from http_edge.dialects import openai_wire as edge_wire
from http_edge.errors import REASON_TABLE, STATUS_TABLE, EdgeError
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb

FIXTURES = Path(__file__).parent / "fixtures"


def recorded(name: str) -> list[Any]:
    out = []
    for line in (FIXTURES / name).read_bytes().splitlines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            out.append(orjson.loads(line[6:]))
    return out


def run_state(events: list[Any], prompt_tokens: int = 7) -> list[pb.ChatChunk]:
    state = ChatStreamState("my-model", prompt_tokens)
    chunks = [c for e in events for c in state.feed(e)]
    return [*chunks, state.final()]


def test_vllm_stream_keeps_upstream_usage_and_ends_with_finish_and_usage() -> None:
    chunks = run_state(recorded("vllm_chat_stream.txt"))
    text = "".join(ch.delta.content for c in chunks for ch in c.choices)
    assert text == "Hello! How can I help?"
    assert all(c.model == "my-model" for c in chunks)  # renamed to the caller's id
    assert all(c.id == "chatcmpl-9f2c" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        17, 6, 23)
    assert not last.usage.estimated
    assert not any(c.HasField("usage") for c in chunks[:-1])


def test_llamacpp_stream_without_usage_is_counted_and_flagged() -> None:
    chunks = run_state(recorded("llamacpp_chat_stream.txt"), prompt_tokens=5)
    last = chunks[-1]
    assert last.usage.estimated
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 2)
    assert last.choices[0].finish_reason == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"


def test_garbled_chunk_is_an_upstream_protocol_error() -> None:
    state = ChatStreamState("m", 1)
    with pytest.raises(core_errors.UpstreamError) as info:
        state.feed({"id": "x", "choices": [{"index": "zero", "delta": {}}]})
    assert info.value.kind == "protocol"


def test_edge_encoder_frames_and_usage_chunk() -> None:
    state = RequestState(dialect="openai", request_id="r")
    enc = edge_wire.ChatEncoder(state, include_usage=True)
    frames = b"".join(enc.encode(c) for c in run_state(recorded("vllm_chat_stream.txt")))
    frames += enc.end()
    events = frames.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    bodies = [orjson.loads(e[6:]) for e in events[:-2]]
    assert bodies[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [b["choices"][0]["delta"].get("content") for b in bodies[:5]] == [
        "", "Hello", "!", " How", " can I help?"]
    assert bodies[-2]["choices"][0]["finish_reason"] == "stop"
    assert bodies[-1]["choices"] == [] and bodies[-1]["usage"]["total_tokens"] == 23
    assert all(b["usage"] is None for b in bodies[:-1])
    assert (state.prompt_tokens, state.completion_tokens) == (17, 6)


def test_chat_request_parsing() -> None:
    req, opts = edge_wire.chat_request({
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        ],
        "temperature": 0.5, "top_p": None, "max_completion_tokens": 9, "stop": "END",
        "top_k": 40, "logit_bias": {"50256": -100}, "seed": None,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object"}}},
        "stream": True, "stream_options": {"include_usage": True}, "user": "u-1",
    })
    assert opts.stream and opts.include_usage and req.include_usage
    assert req.messages[1].parts[1].image_url.startswith("data:image/png")
    assert req.params.temperature == 0.5 and not req.params.HasField("top_p")
    assert req.params.max_completion_tokens == 9 and list(req.params.stop) == ["END"]
    assert req.params.top_k == 40 and not req.params.HasField("seed")
    assert req.response_format.type == pb.ResponseFormat.TYPE_JSON_SCHEMA
    assert req.end_user == "u-1"
    body = core_wire.chat_body(req, "up-model", {"temperature": 0.7, "top_p": 0.9}, stream=True)
    assert body["model"] == "up-model"
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9  # caller over model defaults
    assert body["top_k"] == 40 and isinstance(body["top_k"], int)
    assert body["logit_bias"] == {"50256": -100} and isinstance(body["logit_bias"]["50256"], int)
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "answer", "schema": {"type": "object"}}}
    assert body["stream_options"] == {"include_usage": True}
    assert None not in body.values()
    assert body["messages"][1]["content"][1] == {
        "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


def test_do_sample_false_means_greedy() -> None:
    req, _ = edge_wire.chat_request({"model": "m", "do_sample": False,
                                     "messages": [{"role": "user", "content": "x"}]})
    assert core_wire.chat_body(req, "m", {}, stream=False)["temperature"] == 0.0


def test_completion_prompt_forms() -> None:
    req, _ = edge_wire.completion_request({"model": "m", "prompt": ["only one"]})
    assert req.prompt == "only one"
    with pytest.raises(EdgeError) as info:
        edge_wire.completion_request({"model": "m", "prompt": [1, 2, 3]})
    assert info.value.param == "prompt"


def test_status_table_is_exhaustive() -> None:
    assert set(STATUS_TABLE) == set(grpc.StatusCode)
    assert STATUS_TABLE[grpc.StatusCode.UNAUTHENTICATED].status == 401
    assert STATUS_TABLE[grpc.StatusCode.PERMISSION_DENIED].status == 403
    assert STATUS_TABLE[grpc.StatusCode.DEADLINE_EXCEEDED].status == 504


def _subclasses(
    cls: type[core_errors.GatewayError],
) -> list[type[core_errors.GatewayError]]:
    out: list[type[core_errors.GatewayError]] = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def test_every_core_error_has_a_status_and_an_http_mapping() -> None:
    generic = {"internal", "invalid_request", "not_found", "unauthenticated", "permission_denied",
               "unsupported"}
    for cls in _subclasses(core_errors.GatewayError):
        assert cls.code in grpc.StatusCode.__members__, cls
        assert cls.reason in REASON_TABLE or cls.reason in generic, cls
    assert REASON_TABLE["upstream_error"].status == 502
    assert REASON_TABLE["payload_too_large"].status == 413
    assert REASON_TABLE["unsupported_media_type"].status == 415


def test_tgi_grammar_form_of_a_json_schema() -> None:
    """huggingface_hub sends {"type": "json_object", "value": schema} (TGI's grammar form)."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    req, _ = edge_wire.chat_request({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                     "response_format": {"type": "json_object", "value": schema}})
    assert req.response_format.type == pb.ResponseFormat.TYPE_JSON_SCHEMA
    body = core_wire.chat_body(req, "m", {}, stream=False)
    assert body["response_format"]["json_schema"]["schema"] == schema


def test_events_read_together_go_on_as_one_chunk() -> None:
    """A whole recorded stream arriving in one read: one merged content chunk, then the final."""
    state = ChatStreamState("m", 3)
    events = recorded("vllm_chat_stream.txt")
    [merged] = state.feed_batch(events)
    final = state.final()
    assert len(merged.choices) == 1
    assert merged.choices[0].delta.role == "assistant"
    assert merged.choices[0].delta.content == "Hello! How can I help?"
    assert final.choices[0].finish_reason == "stop" and final.usage.completion_tokens == 6
    # Events of two choices interleaved keep their own text.
    two = ChatStreamState("m", 3)
    [out] = two.feed_batch([
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"id": "x", "choices": [{"index": 1, "delta": {"content": "b"}}]},
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "c"}}]},
    ])
    assert {c.index: c.delta.content for c in out.choices} == {0: "ac", 1: "b"}


def _text_per_choice(chunks: list[Any], chat: bool) -> dict[int, tuple[str, str]]:
    """(text, finish reason) of each choice over a stream's forwarded chunks and its final one."""
    out: dict[int, tuple[str, str]] = {}
    for chunk in chunks:
        for c in chunk.choices:
            text, finish = out.get(c.index, ("", ""))
            out[c.index] = (text + (c.delta.content if chat else c.text),
                            c.finish_reason or finish)
    return out


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completion"])
def test_any_split_into_reads_gives_the_same_stream(chat: bool) -> None:
    """Two choices, finishing at different times, a usage-only event: however the events are split
    into reads, the text and finish reason of each choice and the usage come out the same."""
    def event(index: int, text: str, finish: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": index, "finish_reason": finish}
        if chat:
            choice["delta"] = {"content": text, **({"role": "assistant"} if not text else {})}
        else:
            choice["text"] = text
        return {"id": "s", "created": 1, "choices": [choice]}

    events = [event(0, ""), event(1, ""), event(0, "Hel"), event(1, "Bon"), event(0, "lo"),
              event(0, "!", "stop"), event(1, "jour"), event(1, "", "length"),
              {"id": "s", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 6}}]
    state_type: Any = ChatStreamState if chat else CompletionStreamState
    expected = None
    rng = random.Random(7)
    for _ in range(60):
        cuts = sorted(rng.sample(range(1, len(events)), rng.randint(0, len(events) - 1)))
        reads = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True)]
        state = state_type("m", 3)
        chunks = [c for r in reads for c in state.feed_batch(r)]
        final = state.final()
        got = (_text_per_choice([*chunks, final], chat), final.usage.completion_tokens)
        assert got[0] == {0: ("Hello!", "stop"), 1: ("Bonjour", "length")}
        assert final.usage.completion_tokens == 6
        # Nothing that finishes a choice goes out before the end: the last finish is held.
        assert all(not c.finish_reason or c.index == 0 for chunk in chunks for c in chunk.choices)
        expected = expected or got
        assert got == expected


def test_tgi_messages_api_tool_call_arguments_object_becomes_json_text() -> None:
    """TGI's Messages API writes a call's arguments as a JSON object (and a null description);
    OpenAI's clients expect the JSON text."""
    from gateway_core.openai_answers import parse_chat_response

    resp = parse_chat_response({"id": "", "created": 1, "model": "tgi", "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "tool_calls": [{
            "id": "0", "type": "function", "function": {
                "description": None, "name": "get_weather",
                "arguments": {"location": "Paris", "format": "celsius"}}}]}}]}, "m", 3)
    call = resp.choices[0].message.tool_calls[0]
    assert orjson.loads(call.function.arguments) == {"location": "Paris", "format": "celsius"}
    assert not resp.choices[0].message.HasField("content")
    out = edge_wire.chat_response(resp)["choices"][0]["message"]
    assert out["content"] is None
    assert out["tool_calls"] == [{"id": "0", "type": "function", "function": {
        "name": "get_weather", "arguments": call.function.arguments}}]


@pytest.mark.parametrize(("patch", "param"), [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": [1]}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "strict": "yes"}}]},
     "tools[0].function.strict"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": 3}, "tool_choice"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logit_bias": {"1": 500}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"),
    ({"messages": [{"role": "assistant", "tool_calls": {"id": "x"}}]}, "messages[0].tool_calls"),
    ({"messages": [{"role": "assistant", "tool_calls": [
        {"id": "x", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "tool", "tool_call_id": 7, "content": "x"}]},
     "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": [{"type": 1}]}]}, "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": 5, "format": "wav"}}]}]},
     "messages[0].content[0].input_audio.data"),
])
def test_bad_tool_and_logprob_fields_are_400_naming_the_field(patch: dict[str, Any],
                                                              param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **patch}
    with pytest.raises(EdgeError) as info:
        edge_wire.chat_request(body)
    assert info.value.status == 400 and info.value.param == param
