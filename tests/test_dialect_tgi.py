"""The tgi dialect with TGI's own clients (``text-generation``, ``huggingface_hub``), the openai SDK
on the Messages API with ``model="tgi"``, and raw HTTP."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import huggingface_hub
import openai
import orjson
import pytest
import text_generation
from prometheus_client.parser import text_string_to_metric_families
from text_generation import errors as tg_errors

from http_edge.dialects import tgi_wire
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb
from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.model_servers import FakeTGI
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

WORDS = REPLY.split(" ")
# text-generation calls pydantic v1-style `.dict()`.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:text_generation.*")


@pytest.fixture
async def gw(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(base_config(upstream.base_url, tgi_model="fake-chat",
                                             limits={"max_prompt_chars": 1000}))


async def test_text_generation_client_generate_and_stream(gw: Gateway, upstream: FakeOpenAI) -> None:
    def run() -> tuple[Any, list[Any]]:
        c = text_generation.Client(gw.http)
        done = c.generate("What is Deep Learning?", max_new_tokens=3)
        events = list(c.generate_stream("What is Deep Learning?", max_new_tokens=50))
        return done, events

    done, events = await asyncio.to_thread(run)
    assert done.generated_text == "Deep learning is"
    assert done.details.finish_reason == "length" and done.details.generated_tokens == 3
    sent = upstream.requests[0].body
    assert sent["model"] == "llama" and sent["prompt"] == "What is Deep Learning?"
    assert sent["max_tokens"] == 3 and sent["temperature"] == 0.0  # do_sample false: greedy
    assert "".join(e.token.text for e in events) == REPLY
    assert all(e.generated_text is None for e in events[:-1])
    last = events[-1]
    # The upstream's last token carries the finish reason: it is the last event, not special.
    assert last.generated_text == REPLY and last.token.text == " ." and not last.token.special
    assert last.details.finish_reason == "eos_token"
    assert last.details.generated_tokens == len(WORDS)


async def test_text_generation_async_client_with_full_text(gw: Gateway,
                                                           upstream: FakeOpenAI) -> None:
    c = text_generation.AsyncClient(gw.http)
    done = await c.generate("Q: ", max_new_tokens=2, return_full_text=True, temperature=0.5,
                            top_k=5, seed=42, stop_sequences=["\n"])
    assert done.generated_text == "Q: Deep learning"
    assert done.details.seed == 42
    sent = upstream.requests[-1].body
    assert (sent["temperature"], sent["top_k"], sent["seed"], sent["stop"]) == (0.5, 5, 42, ["\n"])
    assert "echo" not in sent
    pieces = [e async for e in c.generate_stream("Q: ", max_new_tokens=2, return_full_text=True)]
    assert pieces[-1].generated_text == "Q: Deep learning"


async def test_huggingface_hub_text_generation(gw: Gateway) -> None:
    def run() -> tuple[Any, ...]:
        c = huggingface_hub.InferenceClient(model=gw.http)
        text = c.text_generation("What is Deep Learning?", max_new_tokens=4)
        detailed = c.text_generation("What is Deep Learning?", max_new_tokens=4, details=True)
        tokens = list(c.text_generation("What is Deep Learning?", stream=True))
        last = list(c.text_generation("Hi", stream=True, details=True))[-1]
        return text, detailed, tokens, last

    text, detailed, tokens, last = await asyncio.to_thread(run)
    assert text == "Deep learning is a"
    assert detailed.details.finish_reason == "length" and detailed.details.generated_tokens == 4
    assert "".join(tokens) == REPLY
    assert last.generated_text == REPLY and last.details.finish_reason == "eos_token"


async def test_huggingface_hub_chat_completion(gw: Gateway) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is deep learning?"}]

    def run() -> tuple[Any, Any, str]:
        c = huggingface_hub.InferenceClient(base_url=gw.http)
        named = c.chat_completion(messages, model="tgi", max_tokens=20)
        unnamed = c.chat_completion(messages)  # the client sends "model": "dummy"
        streamed = "".join(ch.choices[0].delta.content or "" for ch in
                           c.chat_completion(messages, model="tgi", stream=True) if ch.choices)
        return named, unnamed, streamed

    named, unnamed, streamed = await asyncio.to_thread(run)
    assert named.choices[0].message.content == REPLY and named.model == "tgi"
    assert named.system_fingerprint
    assert unnamed.choices[0].message.content == REPLY
    assert streamed == REPLY


async def test_text_generation_client_chat(gw: Gateway, upstream: FakeOpenAI) -> None:
    msgs = [text_generation.types.Message(role="user", content="What is deep learning?")]

    def run() -> tuple[Any, list[Any], json.JSONDecodeError | None]:
        c = text_generation.Client(gw.http)
        done = c.chat(msgs, max_tokens=10)
        chunks: list[Any] = []
        error: json.JSONDecodeError | None = None
        try:
            for chunk in c.chat(msgs, stream=True):
                chunks.append(chunk)
        except json.JSONDecodeError as exc:  # the client cannot parse `data: [DONE]`
            error = exc
        return done, chunks, error

    done, chunks, error = await asyncio.to_thread(run)
    assert done.choices[0].message.content == " ".join(WORDS[:10]) and done.system_fingerprint
    # Explicit nulls for every unset parameter reached the gateway and were dropped.
    sent = upstream.requests[0].body
    assert "temperature" not in sent and "logit_bias" not in sent and sent["max_tokens"] == 10
    # Every chunk parsed (role and tool_calls in each delta); only the final [DONE] did not.
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert error is not None and "[DONE]" in error.doc


async def test_openai_sdk_with_model_tgi(gw: Gateway) -> None:
    c = openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="-", max_retries=0)
    messages: Any = [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "What is deep learning?"}]
    done = await c.chat.completions.create(model="tgi", messages=messages, stream=False)
    assert done.choices[0].message.content == REPLY and done.system_fingerprint
    stream = await c.chat.completions.create(model="tgi", messages=messages, stream=True,
                                             max_tokens=20)
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == REPLY


async def raw(gw: Gateway, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    async with aiohttp.ClientSession() as s, s.request(method, gw.http + path, json=body,
                                                       headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


def events(raw_body: bytes) -> list[Any]:
    return [orjson.loads(b[5:]) for b in raw_body.split(b"\n\n") if b.startswith(b"data:")]


async def test_raw_routes(gw: Gateway) -> None:
    body = {"inputs": "What is Deep Learning?", "parameters": {"max_new_tokens": 2,
                                                               "details": True}}
    status, _, data = await raw(gw, "POST", "/generate", body)
    assert status == 200
    # (the tokens' log-probabilities from the upstream's stream: a non-streaming request is
    # streamed from the upstream and assembled)
    assert orjson.loads(data) == {"generated_text": "Deep learning", "details": {
        "finish_reason": "length", "generated_tokens": 2, "seed": None, "prefill": [],
        "tokens": [{"id": 0, "text": t, "logprob": -0.25, "special": False}
                   for t in ("Deep", " learning")]}}
    status, _, data = await raw(gw, "POST", "/", {"inputs": "x", "parameters": None})
    assert status == 200 and orjson.loads(data) == [{"generated_text": REPLY}]
    status, ctype, data = await raw(gw, "POST", "/generate_stream", body)
    assert status == 200 and ctype.startswith("text/event-stream")
    assert b"[DONE]" not in data
    evs = events(data)
    assert [e["token"]["text"] for e in evs] == ["Deep", " learning"]
    assert [e["index"] for e in evs] == [1, 2]
    assert evs[-1]["details"] == {"finish_reason": "length", "generated_tokens": 2, "seed": None,
                                  "input_length": 5}
    status, _, data = await raw(gw, "POST", "/", {"inputs": "x", "stream": True})
    assert status == 200 and events(data)[-1]["generated_text"] == REPLY
    status, _, data = await raw(gw, "GET", "/info")
    info = orjson.loads(data)
    assert status == 200 and info["model_id"] == "fake-chat"
    assert info["model_pipeline_tag"] == "text-generation" and info["max_stop_sequences"] == 16


async def test_sagemaker_invocations(gw: Gateway) -> None:
    status, _, data = await raw(gw, "POST", "/invocations", {"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is deep learning?"}]})
    assert status == 200 and orjson.loads(data)["choices"][0]["message"]["content"] == REPLY
    status, _, data = await raw(gw, "POST", "/invocations", {"inputs": "x"})
    assert status == 200 and orjson.loads(data) == [{"generated_text": REPLY}]
    status, _, data = await raw(gw, "POST", "/invocations", {"prompt": "x"})
    assert status == 400 and orjson.loads(data)["error_type"] == "validation"


@pytest.mark.parametrize(("body", "status", "fragment"), [
    ({"parameters": {}}, 400, "'inputs' is required"),
    ({"inputs": ""}, 400, "'inputs' cannot be empty"),
    ({"inputs": "x", "parameters": "max_new_tokens=5"}, 400, "'parameters' must be an object"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, 400,
     "'parameters.max_new_tokens' must be an integer between 1 and"),
    ({"inputs": "x", "parameters": {"temperature": 0}}, 400, "must be strictly positive"),
    ({"inputs": "x", "parameters": {"repetition_penalty": 1e308}}, 400, "between 0 and 100"),
    ({"inputs": "x", "parameters": {"best_of": 2}}, 400, "'parameters.best_of' greater than 1"),
    ({"inputs": "x", "parameters": {"grammar": {"type": "json", "value": {}}}}, 400,
     "'parameters.grammar' is not supported"),
    ({"inputs": "x", "parameters": {"stop": ["a"] * 17}}, 400, "at most 16 sequences"),
    ({"inputs": "x", "parameters": {"max_new_tokens": 2**32}}, 400, "between 1 and 4294967295"),
    ({"inputs": "x", "parameters": {"seed": 2**63}}, 400, "between 0 and 9223372036854775807"),
    ({"inputs": "x" * 1001}, 413, "the prompt is 1001 characters long"),
])
async def test_bad_inputs_in_tgi_error_shape(gw: Gateway, body: Any, status: int,
                                             fragment: str) -> None:
    for path in ("/generate", "/generate_stream", "/"):
        got, ctype, data = await raw(gw, "POST", path, body)
        assert got == status and ctype.startswith("application/json")
        err = orjson.loads(data)
        assert set(err) == {"error", "error_type"} and fragment in err["error"]
        assert err["error_type"] == "validation"


async def test_client_raises_tgi_error_classes(gw: Gateway, upstream: FakeOpenAI,
                                               gateway_factory: GatewayFactory) -> None:
    broken = await gateway_factory(base_config(upstream.base_url, tgi_model="fake-500"))
    unset = await gateway_factory(base_config(upstream.base_url))

    def run() -> list[BaseException]:
        got: list[BaseException] = []
        for base, kw in ((broken.http, {}), (gw.http, {"top_n_tokens": 0})):
            try:
                text_generation.Client(base).generate("x", **kw)
            except Exception as exc:
                got.append(exc)
        try:
            text_generation.Client(unset.http).generate("x")
        except Exception as exc:
            got.append(exc)
        return got

    generation, validation, missing = await asyncio.to_thread(run)
    assert isinstance(generation, tg_errors.GenerationError) and "HTTP 500" in str(generation)
    assert isinstance(validation, tg_errors.ValidationError) and "top_n_tokens" in str(validation)
    assert isinstance(missing, tg_errors.ValidationError) and "set tgi_model" in str(missing)


async def test_stream_failing_midway_ends_with_a_tgi_error_event(
        gw: Gateway, upstream: FakeOpenAI) -> None:
    upstream.token_delay = 0.05

    def run() -> tuple[list[Any], BaseException | None]:
        c = text_generation.Client(gw.http, headers={"OICM-Request-Timeout": "0.3"})
        got: list[Any] = []
        try:
            for event in c.generate_stream("x", max_new_tokens=100):
                got.append(event)
        except Exception as exc:
            return got, exc
        return got, None

    got, exc = await asyncio.to_thread(run)
    assert got and all(e.generated_text is None for e in got)
    assert isinstance(exc, tg_errors.GenerationError) and "deadline" in str(exc)


def test_stream_ending_on_an_empty_chunk_ends_with_a_special_token() -> None:
    """An upstream whose last message holds no token (a separate finish event, no logprobs):
    the final fields go on an empty special token, as an end-of-sequence token would carry."""
    req, opts = tgi_wire.generate_request({"inputs": "ping", "parameters": {"details": True}})
    enc = tgi_wire.GenerateEncoder(RequestState(dialect="tgi", request_id="r"), opts)
    frames = [enc.encode(pb.CompletionChunk(choices=[pb.CompletionChoice(text=t)]))
              for t in ("Hello", " world")]
    frames.append(enc.encode(pb.CompletionChunk(
        choices=[pb.CompletionChoice(finish_reason="stop")],
        usage=pb.Usage(prompt_tokens=1, completion_tokens=3))))
    evs = [orjson.loads(f[5:]) for f in frames]
    assert req.logprobs == 0 and len(evs) == 3
    assert evs[-1]["token"] == {"id": 0, "text": "", "logprob": None, "special": True}
    assert evs[-1]["generated_text"] == "Hello world"
    assert evs[-1]["details"]["generated_tokens"] == 3
    assert all(not e["token"]["special"] for e in evs[:-1])


async def test_metrics_count_tgi_requests_under_the_tgi_model(gw: Gateway) -> None:
    labels = {"dialect": "tgi", "task": "completion", "model": "fake-chat", "code": "200"}

    async def count() -> float:
        _, _, data = await raw(gw, "GET", "/metrics")
        for family in text_string_to_metric_families(data.decode()):
            for sample in family.samples:
                if sample.name == "gateway_requests_total" and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    before = await count()
    status, _, _ = await raw(gw, "POST", "/generate", {"inputs": "x"})
    assert status == 200 and await count() == before + 1


async def test_one_event_per_upstream_token_even_when_read_together(
        gw: Gateway, upstream: FakeOpenAI) -> None:
    """A fast OpenAI-compatible upstream's events arrive several per read and the core merges
    them; the tgi dialect still sends one event per token (the core asks for log-probabilities,
    which list the tokens), the last carrying the details, and events equal generated_tokens."""
    def run() -> list[Any]:
        return list(text_generation.Client(gw.http).generate_stream(
            "What is Deep Learning?", max_new_tokens=50, top_n_tokens=1))

    events = await asyncio.to_thread(run)
    assert upstream.requests[-1].body["logprobs"] == 1
    assert [e.token.text for e in events] == [w if i == 0 else " " + w
                                              for i, w in enumerate(WORDS)]
    assert all(e.token.logprob == -0.25 for e in events)
    assert events[0].top_tokens[0].text == "Deep"
    assert len(events) == events[-1].details.generated_tokens == len(WORDS)


@pytest.mark.parametrize(("max_new_tokens", "finish"), [(50, "eos_token"), (3, "length")])
async def test_tgi_upstream_events_pass_one_for_one(
        gateway_factory: GatewayFactory, max_new_tokens: int, finish: str) -> None:
    """TGI in front of TGI: the same events (ids, texts, logprobs, the special end token), as many
    as generated_tokens, the last with generated_text and details."""
    tgi = await FakeTGI().start()
    try:
        gw = await gateway_factory({"auth": {"enabled": False}, "tgi_model": "native",
                                    "models": [{"id": "native", "task": "chat", "provider": "tgi",
                                                "upstream_url": tgi.base_url}]})

        def run() -> list[Any]:
            return list(text_generation.Client(gw.http).generate_stream(
                "hello", max_new_tokens=max_new_tokens))

        events = await asyncio.to_thread(run)
    finally:
        await tgi.stop()
    last = events[-1]
    assert last.details.finish_reason == finish
    assert len(events) == last.details.generated_tokens
    assert [e.token.id for e in events[:-1]] == list(range(len(events) - 1))
    assert all(e.token.logprob is not None for e in events)
    assert last.token.special == (finish == "eos_token")
    assert last.generated_text == "".join(e.token.text for e in events if not e.token.special)


async def test_mock_events_equal_generated_tokens(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False}, "tgi_model": "mock-chat",
                                "models": [{"id": "mock-chat", "task": "chat",
                                            "provider": "mock"}]})
    async with aiohttp.ClientSession() as s, s.post(f"{gw.http}/generate_stream", json={
            "inputs": "one two three", "parameters": {"details": True}}) as resp:
        events = [orjson.loads(line[5:]) async for line in resp.content
                  if line.startswith(b"data:")]
    assert len(events) == events[-1]["details"]["generated_tokens"] > 3
    assert events[-1]["generated_text"] == "".join(e["token"]["text"] for e in events)
