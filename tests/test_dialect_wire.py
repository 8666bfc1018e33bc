"""Pure translation of the endpoint, mlflow, unified and tgi dialects, with no servers: request
bodies → typed requests, typed results → each dialect's bodies, the error shapes over the whole
status table, and the core's registry rules that these dialects rely on (endpoints, "tgi")."""

from __future__ import annotations

from typing import Any

import grpc
import orjson
import pytest

from gateway_common.config import ConfigError, parse_config
from gateway_core.errors import ModelNotFound, NotFound
from gateway_core.providers.base import SessionPool
from gateway_core.registry import ModelRegistry
from http_edge.dialects import mlflow, mlflow_wire, tgi, tgi_wire, unified, unified_wire
from http_edge.errors import STATUS_TABLE, EdgeError
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb

MSG = [{"role": "user", "content": "hi"}]


def sse(data: bytes) -> list[Any]:
    out: list[Any] = []
    for block in data.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append(payload.decode() if payload == b"[DONE]" else orjson.loads(payload))
    return out


# ---------------------------------------------------------------------------------------------
# unified


def test_unified_defaults_and_spellings() -> None:
    req, opts = unified_wire.chat_request({"model": "m", "messages": MSG})
    p = req.params
    assert (round(p.temperature, 3), p.max_tokens, round(p.top_p, 3)) == (0.7, 256, 0.9)
    assert not p.HasField("frequency_penalty") and opts == unified_wire.ChatOptions(False, True)
    assert req.include_usage
    req, opts = unified_wire.chat_request({"model": "m", "messages": MSG, "parameters": {
        "maxTokens": 5, "topP": 0.5, "frequencyPenalty": 1, "presence_penalty": -1,
        "max_tokens": 5, "includeUsage": False, "stream": True, "endUserId": "u"}})
    assert (req.params.max_tokens, req.params.top_p, req.params.frequency_penalty) == (5, 0.5, 1)
    assert req.params.presence_penalty == -1 and req.end_user == "u"
    assert opts == unified_wire.ChatOptions(True, False) and not req.include_usage


def test_unified_response_formats() -> None:
    req, _ = unified_wire.chat_request({"model": "m", "messages": MSG,
                                        "parameters": {"json_output": True}})
    assert req.response_format.type == pb.ResponseFormat.TYPE_JSON_OBJECT
    req, _ = unified_wire.chat_request({"model": "m", "messages": MSG, "parameters": {
        "json_output": False, "json_schema": {"type": "object"}}})
    assert req.response_format.type == pb.ResponseFormat.TYPE_JSON_SCHEMA
    assert dict(req.response_format.json_schema) == {"type": "object"}
    with pytest.raises(EdgeError, match=r"'parameters\.json_schema\.schema' must be an object"):
        unified_wire.chat_request({"model": "m", "messages": MSG,
                                   "parameters": {"json_schema": {"schema": 3}}})


@pytest.mark.parametrize(("finish", "stop"), [
    ("stop", "end_turn"), ("length", "max_tokens"), ("content_filter", "content_filtered"),
    ("tool_calls", "tool_use"), ("", "end_turn"), ("something_new", "something_new"),
])
def test_unified_stop_reasons(finish: str, stop: str) -> None:
    assert unified_wire.stop_reason(finish) == stop


def test_unified_encoder_skips_empty_deltas_and_ends_with_usage() -> None:
    state = RequestState("unified", "rid")
    enc = unified_wire.ChatEncoder(state, include_usage=True)
    data = enc.encode(pb.ChatChunk(model="m", created=5, choices=[
        pb.ChatChunkChoice(delta=pb.ChatDelta(role="assistant", content=""))]))
    data += enc.encode(pb.ChatChunk(model="m", created=5, choices=[
        pb.ChatChunkChoice(delta=pb.ChatDelta(content="Bon"))]))
    data += enc.encode(pb.ChatChunk(model="m", created=5, choices=[
        pb.ChatChunkChoice(delta=pb.ChatDelta(content="jour"), finish_reason="stop")],
        usage=pb.Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)))
    data += enc.end()
    assert sse(data) == [
        {"schema": "inference.response.chunk.v1", "created": 5, "model_id": "m", "content": "Bon"},
        {"schema": "inference.response.chunk.v1", "created": 5, "model_id": "m",
         "content": "jour"},
        {"schema": "inference.response.usage.chunk.v1",
         "usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}, "created": 5,
         "model_id": "m", "content": ""},
        "[DONE]",
    ]
    assert (state.prompt_tokens, state.completion_tokens) == (3, 2)


# ---------------------------------------------------------------------------------------------
# tgi


def test_tgi_request_maps_parameters_like_tgi() -> None:
    # The text-generation client's body: explicit nulls, do_sample false, details true.
    body = {"inputs": "Q", "stream": False, "parameters": {
        "best_of": None, "decoder_input_details": False, "details": True, "do_sample": False,
        "frequency_penalty": None, "grammar": None, "max_new_tokens": 20,
        "repetition_penalty": None, "return_full_text": False, "seed": None, "stop": [],
        "temperature": None, "top_k": None, "top_n_tokens": None, "top_p": None,
        "truncate": None, "typical_p": None, "watermark": False}}
    req, opts = tgi_wire.generate_request(body)
    assert req.model == "tgi" and req.prompt == "Q" and req.include_usage
    assert req.params.max_tokens == 20 and req.params.HasField("do_sample")
    assert not req.params.do_sample and not req.params.stop
    assert opts == tgi_wire.GenerateOptions(stream=False, details=True, prefix="", seed=None)
    # A sampling parameter turns sampling on, as in TGI, even with do_sample false.
    req, opts = tgi_wire.generate_request({"inputs": "Q", "parameters": {
        "do_sample": False, "temperature": 0.3, "return_full_text": True, "seed": 1}}, True)
    assert not req.params.HasField("do_sample") and opts.prefix == "Q" and opts.stream
    assert opts.seed == 1 and req.params.seed == 1


def test_tgi_response_and_stream_events() -> None:
    opts = tgi_wire.GenerateOptions(stream=True, details=True, prefix="Q: ", seed=None)
    resp = pb.CompletionResponse(choices=[pb.CompletionChoice(text="A", finish_reason="length")],
                                 usage=pb.Usage(prompt_tokens=2, completion_tokens=1))
    assert tgi_wire.generate_response(resp, opts) == {"generated_text": "Q: A", "details": {
        "finish_reason": "length", "generated_tokens": 1, "seed": None, "prefill": [],
        "tokens": []}}
    enc = tgi_wire.GenerateEncoder(RequestState("tgi", "rid"), opts)
    data = enc.encode(pb.CompletionChunk(choices=[pb.CompletionChoice(text="A")]))
    data += enc.encode(pb.CompletionChunk(choices=[pb.CompletionChoice(text="")]))
    data += enc.encode(pb.CompletionChunk(
        choices=[pb.CompletionChoice(text="", finish_reason="stop")],
        usage=pb.Usage(prompt_tokens=2, completion_tokens=1)))
    assert enc.end() == b""
    events = sse(data)
    assert [e["token"]["text"] for e in events] == ["A", ""]
    assert events[-1]["token"]["special"] and events[-1]["generated_text"] == "Q: A"
    assert events[-1]["details"] == {"finish_reason": "eos_token", "generated_tokens": 1,
                                     "seed": None, "input_length": 2}


# ---------------------------------------------------------------------------------------------
# mlflow


def test_mlflow_page_tokens_and_pages() -> None:
    assert mlflow_wire.decode_token(mlflow_wire.encode_token(7)) == 7
    for bad in ("", "!!", "bm90IGpzb24=",
                "eyJpbmRleCI6IC0xfQ==", "eyJpbmRleCI6IHRydWV9"):
        with pytest.raises(EdgeError, match="invalid page_token"):
            mlflow_wire.decode_token(bad)
    models = [pb.Model(id=f"m{i}", task=pb.TASK_CHAT) for i in range(3)]
    models.insert(1, pb.Model(id="r", task=pb.TASK_RERANK))
    page = mlflow_wire.endpoints_page(models, 0, 2)
    assert [e["name"] for e in page["endpoints"]] == ["m0", "m1"]
    last = mlflow_wire.endpoints_page(models, mlflow_wire.decode_token(page["next_page_token"]), 2)
    assert [e["name"] for e in last["endpoints"]] == ["m2"] and "next_page_token" not in last


def test_mlflow_body_task() -> None:
    assert mlflow_wire.body_task({"messages": []}) == "chat"
    assert mlflow_wire.body_task({"prompt": "x", "input": None}) == "completion"
    assert mlflow_wire.body_task({"input": ["x"]}) == "embedding"
    assert mlflow_wire.body_task({"query": "x"}) is None


# ---------------------------------------------------------------------------------------------
# Error shapes, over the whole status table


@pytest.mark.parametrize("code", list(grpc.StatusCode))
def test_each_dialect_renders_every_status(code: grpc.StatusCode) -> None:
    err = EdgeError(STATUS_TABLE[code], "what went wrong")
    body = tgi.TGI.error_body(err, "rid")
    assert body == {"error": "what went wrong", "error_type": tgi_wire.error_type(err)}
    assert body["error_type"] in {"validation", "generation", "overloaded"}
    assert (body["error_type"] == "generation") == (err.status >= 500 and err.status != 503)
    assert sse(tgi.TGI.stream_error(err, "rid")) == [body]
    body = mlflow.MLFLOW.error_body(err, "rid")
    assert body["detail"] == "what went wrong" and body["error_code"].isupper()
    assert sse(mlflow.MLFLOW.stream_error(err, "rid")) == [body, "[DONE]"]
    body = unified.UNIFIED.error_body(err, "rid")
    assert body["schema"] == "inference.error.v1" and body["request_id"] == "rid"
    assert body["error"]["message"] == "what went wrong"
    assert sse(unified.UNIFIED.stream_error(err, "rid")) == [body, "[DONE]"]


# ---------------------------------------------------------------------------------------------
# The core's side: endpoints and the TGI names


def registry(data: dict[str, Any]) -> ModelRegistry:
    return ModelRegistry.from_config(parse_config(data), SessionPool())


MODELS = [{"id": "a", "task": "chat", "provider": "mock", "aliases": ["alpha"]},
          {"id": "b", "task": "chat", "provider": "mock"}]


def test_registry_endpoints() -> None:
    reg = registry({"models": MODELS, "endpoints": {"e": ["alpha", "a"]}, "tgi_model": "b"})
    assert reg.endpoint("e") == ["a"]
    assert reg.resolve("alpha", "chat", "e").id == "a"
    with pytest.raises(ModelNotFound, match="'b' is not served by the endpoint 'e'"):
        reg.resolve("b", "chat", "e")
    with pytest.raises(NotFound, match="the endpoint 'zz' does not exist"):
        reg.resolve("a", "chat", "zz")
    assert reg.get("tgi").id == "b" and reg.get("dummy").id == "b"
    assert list(reg.get("b").to_proto().aliases) == ["tgi", "dummy"]


def test_tgi_names_without_tgi_model_or_taken() -> None:
    with pytest.raises(ModelNotFound, match="set tgi_model"):
        registry({"models": MODELS}).get("tgi")
    taken = registry({"models": [*MODELS, {"id": "tgi", "task": "chat", "provider": "mock"}],
                      "tgi_model": "a"})
    assert taken.get("tgi").id == "tgi" and taken.get("dummy").id == "a"
    with pytest.raises(ConfigError, match="tgi_model: no model named 'zz'"):
        parse_config({"models": MODELS, "tgi_model": "zz"})
