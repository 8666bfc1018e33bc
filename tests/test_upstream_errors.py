"""An upstream's refusal keeps its meaning: its message, ``type``, ``param`` and ``code`` (and a
429's ``Retry-After``) reach SDK clients, the other dialects and gRPC callers, unary and
mid-stream, against the fake upstream on loopback."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway_core import errors as core_errors
from gateway_core.providers import http as providers_http
from gateway_core.providers.http import status_error
from http_edge import errors as edge_errors
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.openai_upstream import CONTEXT_TOO_LONG, MID_STREAM_ERROR, FakeOpenAI

BEHAVIOURS = ["error-400-openai", "error-400-llamacpp", "error-413", "error-422",
              "mid-error-coded"]
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x"}]


@pytest.fixture
async def gw(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    config = base_config(upstream.base_url, tgi_model="fake-error-422")
    config["models"] += [
        {"id": f"fake-{b}", "task": "chat", "provider": "openai",
         "upstream_url": upstream.base_url, "upstream_model": b} for b in BEHAVIOURS]
    return await gateway_factory(config)


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize(("model", "exc", "status", "body"), [
    # OpenAI's and vLLM's answer: every field as the upstream gave it.
    ("fake-error-400-openai", openai.BadRequestError, 400, CONTEXT_TOO_LONG["error"]),
    # llama.cpp's integer code repeats the HTTP status: the gateway's own code stands.
    ("fake-error-400-llamacpp", openai.BadRequestError, 400, {
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error", "param": None, "code": "upstream_rejected"}),
    ("fake-error-413", openai.APIStatusError, 413, {
        "message": "request body too large", "type": "invalid_request_error", "param": None,
        "code": "request_too_large"}),
    # TGI's {"error": "...", "error_type"}: its type is the upstream's error_type.
    ("fake-error-422", openai.UnprocessableEntityError, 422, {
        "message": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096",
        "type": "validation", "param": None, "code": "unprocessable_entity"}),
])
async def test_sdk_sees_the_upstreams_error_fields(
    gw: Gateway, model: str, exc: type[openai.APIStatusError], status: int, body: dict[str, Any]
) -> None:
    with pytest.raises(exc) as info:
        await client(gw).chat.completions.create(model=model, messages=MESSAGES)
    err = info.value
    assert err.status_code == status
    assert err.body == body
    assert (err.message.endswith(body["message"]) and err.code == body["code"]
            and err.param == body["param"] and err.type == body["type"])
    assert err.response.headers["x-should-retry"] == "false"


async def test_mid_stream_error_event_keeps_the_fields(gw: Gateway) -> None:
    stream = await client(gw).chat.completions.create(
        model="fake-mid-error-coded", messages=MESSAGES, stream=True)
    got = []
    with pytest.raises(openai.APIError) as info:
        async for chunk in stream:
            got.append(chunk)
    assert got  # the chunks before the failure arrived
    upstream = MID_STREAM_ERROR["error"]
    err = info.value
    assert (err.code, err.param, err.type) == (upstream["code"], upstream["param"],
                                               upstream["type"])
    assert upstream["message"] in err.message


async def _post(gw: Gateway, path: str, body: Any) -> tuple[int, list[Any]]:
    """Status and the JSON documents of the answer (one, or each ``data:`` event)."""
    async with aiohttp.ClientSession() as s, s.post(gw.http + path, json=body) as r:
        text = await r.text()
        if r.content_type != "text/event-stream":
            return r.status, [orjson.loads(text)]
        return r.status, [orjson.loads(line[6:]) for line in text.splitlines()
                          if line.startswith("data: {")]


async def test_unified_dialect_error_schema_has_the_fields(gw: Gateway) -> None:
    body: dict[str, Any] = {"model": "fake-error-400-openai", "messages": MESSAGES}
    status, (doc,) = await _post(gw, "/v1/inference/chat", body)
    assert status == 400 and doc["schema"] == "inference.error.v1"
    assert doc["error"] == {**CONTEXT_TOO_LONG["error"]}
    body = {"model": "fake-mid-error-coded", "messages": MESSAGES, "parameters": {"stream": True}}
    status, events = await _post(gw, "/v1/inference/chat", body)
    assert status == 200 and events[-1]["schema"] == "inference.error.v1"
    assert events[-1]["error"]["code"] == "context_length_exceeded"
    assert events[-1]["error"]["param"] == "messages"


async def test_tgi_dialect_keeps_its_own_error_shape(gw: Gateway) -> None:
    status, (doc,) = await _post(gw, "/generate", {"inputs": "x"})
    assert status == 422
    assert doc == {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be "
                            "<= 4096", "error_type": "validation"}


async def test_mlflow_dialect_keeps_its_error_codes(gw: Gateway) -> None:
    status, (doc,) = await _post(gw, "/gateway/fake-error-400-openai/invocations",
                                 {"messages": MESSAGES})
    assert status == 400
    assert doc == {"detail": CONTEXT_TOO_LONG["error"]["message"],
                   "error_code": "INVALID_PARAMETER_VALUE"}


async def test_upstream_429_retry_after_reaches_the_client(gw: Gateway) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        await client(gw).chat.completions.create(model="fake-429", messages=MESSAGES)
    assert info.value.response.headers["retry-after"] == "7"
    assert "too many requests" in info.value.message


def chat(model: str) -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[pb.ChatMessage(role="user", content="x")])


async def test_grpc_callers_get_the_fields_as_trailers(gw: Gateway) -> None:
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(chat("fake-error-400-openai"), timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == CONTEXT_TOO_LONG["error"]["message"]
        trailers = dict(info.value.trailing_metadata() or ())
        assert {k: trailers.get(k) for k in ("igw-reason", "igw-error-type", "igw-error-param",
                                             "igw-error-code")} == {
            "igw-reason": "upstream_rejected", "igw-error-type": "invalid_request_error",
            "igw-error-param": "messages", "igw-error-code": "context_length_exceeded"}

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(chat("fake-error-400-llamacpp"), timeout=5)
        trailers = dict(info.value.trailing_metadata() or ())
        assert "igw-error-code" not in trailers and "igw-error-param" not in trailers

        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Chat(chat("fake-429"), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(info.value.trailing_metadata() or ())["retry-after"] == "7"

        stream = stub.ChatStream(chat("fake-mid-error-coded"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        trailers = dict(info.value.trailing_metadata() or ())
        assert trailers["igw-error-code"] == "context_length_exceeded"


def test_upstream_address_and_credentials_never_reach_the_caller() -> None:
    body = orjson.dumps({"error": {
        "message": "bad request to http://user:pw@vllm-7.internal:8000/v1 (Bearer sk-live-123) "
                   "from 10.1.2.3:5000 with key sk-live-123",
        "type": "invalid_request_error\n", "param": "é", "code": "x" * 129}})
    err = status_error(400, body, "http://user:pw@vllm-7.internal:8000/v1/chat/completions",
                       api_key="sk-live-123")
    assert "vllm-7.internal" not in err.message and "sk-live" not in err.message
    assert "10.1.2.3" not in err.message and "pw" not in err.message
    # Scrubbed before it is cut: no prefix of a key survives at the cut.
    cut = status_error(400, orjson.dumps({"error": {"message": "x" * 295 + " sk-live-123"}}),
                       "http://u/v1", api_key="sk-live-123")
    assert "sk-" not in cut.message
    # Fields that are not printable ASCII of at most 128 characters stay out.
    assert err.trailers() == (("igw-reason", "upstream_rejected"),)


def test_retry_after_only_when_well_formed() -> None:
    def retry_after(value: str) -> str | None:
        return status_error(429, b"", "http://u/v1", headers={"Retry-After": value}).fields.retry_after

    assert retry_after("7") == "7"
    assert retry_after("Wed, 21 Oct 2026 07:28:00 GMT") == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert retry_after("soon") is None and retry_after("-1") is None


def test_edge_and_core_agree_on_the_trailer_keys() -> None:
    for name in ("REASON_KEY", "ERROR_TYPE_KEY", "ERROR_PARAM_KEY", "ERROR_CODE_KEY",
                 "RETRY_AFTER_KEY"):
        assert getattr(edge_errors, name) == getattr(core_errors, name), name


async def test_unreachable_upstream_is_not_named(gw: Gateway) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        await client(gw).chat.completions.create(model="fake-refused", messages=MESSAGES)
    assert "unreachable" in info.value.message and "127.0.0.1" not in info.value.message


def test_every_upstream_refusal_reason_is_in_the_edge_table() -> None:
    for status, reason in providers_http._REJECTED_REASONS.items():
        assert edge_errors.REASON_TABLE[reason].status == status
