"""The oicm dialect (seed 000) over real HTTP: every path under ``/models/{id}/proxy/v1/`` and
without ``/v1``, the seed's payloads and response shapes, the seed's own streaming client loop,
the temperature/top_p defaults, custom chat templates, and bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests

from gateway_common.defaults import MOCK_MODELS
from gateway_core.providers.mock_media import tone_wav
from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

SEED_TEMPLATE = """
{% if messages[0]['role'] == 'system' %}
{% set loop_messages = messages[1:] %}
{% set system_message = messages[0]['content'] %}
{% else %}
{% set loop_messages = messages %}
{% set system_message = '' %}
{% endif %}
{% for message in loop_messages %}
{% if loop.index0 == 0 %}
{{ system_message.strip() }}
{% endif %}
{{ '\\n\\n' + message['role'] + ': ' + message['content'].strip().replace('\\r\\n', '\\n').replace('\\n\\n', '\\n') }}
{% if loop.last and message['role'] == 'user' %}
{{ '\\n\\nAssistant: ' }}
{% endif %}
{% endfor %}
"""  # noqa: E501  (the seed's template, verbatim)
SEED_MESSAGES = [
    {"role": "system", "content": "Be friendly"},
    {"role": "user", "content": "What's the capital of UAE?"},
    {"role": "assistant", "content": ""},
]
LIMIT = 200_000


@pytest.fixture
async def gw(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    data = base_config(upstream.base_url)
    mocks = {m["id"] for m in MOCK_MODELS}
    data["models"] = [m for m in data["models"] if m["id"] not in mocks] + [
        {**m, "provider": "mock"} for m in MOCK_MODELS]
    data["limits"] = {"max_upload_bytes": LIMIT, "template_timeout_seconds": 0.5}
    return await gateway_factory(data)


def url(gw: Gateway, model: str, path: str, v1: bool = True) -> str:
    return f"{gw.http}/models/{model}/proxy{'/v1' if v1 else ''}/{path}"


async def post(gw: Gateway, model: str, path: str, body: Any, v1: bool = True,
               ) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url(gw, model, path, v1), json=body) as r:
        text = await r.text()
        return r.status, json.loads(text) if text else None


def seed_stream_client(stream_url: str, payload: dict[str, Any]) -> str:
    """The seed's own client loop (section 2.1), verbatim in spirit: requests, iter_lines,
    line[6:], json, choices[0].delta.content, bare except."""
    headers = {"Authorization": "Bearer unused", "accept": "text/event-stream"}
    out = ""
    resp = requests.post(stream_url, headers=headers, json=payload, stream=True, timeout=10)
    for token in resp.iter_lines():
        try:
            json_data = json.loads(token.decode("utf-8")[6:])
            out += json_data["choices"][0]["delta"]["content"]
        except Exception:
            pass
    return out


async def test_seed_generate_form_stream_with_the_seed_client(gw: Gateway,
                                                              upstream: FakeOpenAI) -> None:
    payload = {"inputs": "What is Deep Learning?", "max_new_tokens": 200, "do_sample": False,
               "stream": True}
    text = await asyncio.to_thread(seed_stream_client,
                                   url(gw, "fake-chat", "chat/completions"), payload)
    assert text == REPLY
    sent = upstream.requests[-1]
    assert sent.path == "/v1/completions" and sent.body["prompt"] == "What is Deep Learning?"
    assert sent.body["max_tokens"] == 200 and sent.body["temperature"] == 0.0  # greedy
    status, body = await post(gw, "fake-chat", "chat/completions",
                              {"inputs": "Hi", "max_new_tokens": 3})
    assert status == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Deep learning is"
    assert upstream.requests[-1].body["temperature"] == 0.7
    assert upstream.requests[-1].body["top_p"] == 0.9


async def test_seed_messages_stream_and_defaults(gw: Gateway, upstream: FakeOpenAI) -> None:
    payload = {"model": "whatever-the-models-route-said",
               "messages": [{"role": "system", "content": "You are a helpful assisant"},
                            {"role": "user", "content": "describe gravity"}],
               "temperature": 0.9, "top_p": 0.7, "max_tokens": 1000, "stream": True}
    text = await asyncio.to_thread(seed_stream_client,
                                   url(gw, "fake-chat", "chat/completions", v1=False), payload)
    assert text == REPLY
    sent = upstream.requests[-1].body
    assert sent["model"] == "llama" and sent["temperature"] == 0.9 and sent["top_p"] == 0.7
    status, _ = await post(gw, "fake-chat", "chat/completions",
                           {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    sent = upstream.requests[-1].body
    assert sent["temperature"] == 0.7 and sent["top_p"] == 0.9


async def test_models_route(gw: Gateway) -> None:
    for v1 in (True, False):
        async with aiohttp.ClientSession() as s, s.get(url(gw, "chat", "models", v1)) as r:
            assert r.status == 200
            data = await r.json()
        assert data["data"][0]["id"] == "mock-chat"  # the alias resolves to the model
        assert data["data"][0]["task"] == "chat"
    async with aiohttp.ClientSession() as s, s.get(url(gw, "nope", "models")) as r:
        assert r.status == 404
        assert "nope" in (await r.json())["error"]["message"]


async def test_chat_template_rendered_in_the_core(gw: Gateway, upstream: FakeOpenAI) -> None:
    status, body = await post(gw, "fake-chat", "chat/completions",
                              {"messages": SEED_MESSAGES, "chat_template": SEED_TEMPLATE})
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == REPLY
    sent = upstream.requests[-1]
    assert sent.path == "/v1/completions"
    assert sent.body["prompt"] == ("\nBe friendly\n\n\nuser: What's the capital of UAE?"
                                   "\n\n\nassistant: \n")
    stream = await asyncio.to_thread(
        seed_stream_client, url(gw, "fake-chat", "chat/completions"),
        {"messages": SEED_MESSAGES, "chat_template": "{{ messages[-2].content }}",
         "stream": True})
    assert stream == REPLY
    assert upstream.requests[-1].body["prompt"] == "What's the capital of UAE?"


@pytest.mark.parametrize(("template", "expected"), [
    ("{% for m in messages %}{{ m.content", "not valid Jinja"),
    ("{{ tools }}", "'tools' is undefined"),
    ("{{ messages.append(1) }}", "not allowed"),
    ("{{ 'x' * 100000000 }}", "repetition"),
    ("{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}",
     "longer than 0.5 s"),
    ("{% set s = 'ab' %}" + "{% set s = s ~ s %}" * 40 + "{{ s }}", "limit"),
    ("{{ raise_exception('system messages are not supported') }}",
     "system messages are not supported"),
])
async def test_chat_template_errors_are_400(gw: Gateway, template: str, expected: str) -> None:
    status, body = await post(gw, "mock-chat", "chat/completions",
                              {"messages": SEED_MESSAGES, "chat_template": template})
    assert status == 400, body
    assert "chat_template" in body["error"]["message"]
    assert expected in body["error"]["message"]


async def test_classify_sorted(gw: Gateway) -> None:
    for v1 in (True, False):
        status, body = await post(gw, "mock-classifier", "classify",
                                  {"inputs": "this is good!"}, v1)
        assert status == 200
        scores = [c["score"] for c in body["classification"]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3
        assert set(body["classification"][0]) == {"label", "score"}
    status, body = await post(gw, "mock-classifier", "classify", {"inputs": ["a", "b"]})
    assert status == 200 and len(body["classification"]) == 2


async def test_predict_text_classification_and_classical(gw: Gateway) -> None:
    status, body = await post(gw, "mock-classifier", "predict",
                              {"inputs": "Abu Dhabi is great!"})
    assert status == 200 and {p["label"] for p in body} == {"positive", "neutral", "negative"}
    status, body = await post(gw, "mock-predict", "predict", [1, 2, 3])
    assert status == 200
    assert body == {"data": [10.0], "meta": {
        "input_schema": [{"tensor-spec": {"dtype": "float64", "shape": [-1, -1]},
                          "type": "tensor"}],
        "output_schema": [{"tensor-spec": {"dtype": "float64", "shape": [-1]},
                           "type": "tensor"}]}}
    status, body = await post(gw, "mock-predict", "predict", [[1, 2], ["a", 3]], v1=False)
    assert status == 400 and "element [1][0]" in body["error"]["message"]
    status, body = await post(gw, "mock-predict", "predict", [[1, 2], [3]])
    assert status == 400 and "ragged" in body["error"]["message"]
    deep: Any = 1
    for _ in range(200):
        deep = [deep]
    status, body = await post(gw, "mock-predict", "predict", deep)
    assert status == 400 and "nested more than 32 levels" in body["error"]["message"]
    status, body = await post(gw, "mock-image", "generate-image", {"prompt": "x", "p": deep})
    assert status == 400 and "nested" in body["error"]["message"]


async def test_embed_and_rerank_tei_shapes(gw: Gateway) -> None:
    status, body = await post(gw, "mock-embedding", "embed", {"inputs": "What is Deep Learning?"})
    assert status == 200 and len(body) == 1 and len(body[0]) == 384
    status, body = await post(gw, "embeddings", "embed", {"inputs": ["a", "b"]}, v1=False)
    assert status == 200 and len(body) == 2
    status, body = await post(gw, "mock-rerank", "rerank", {
        "query": "What is Deep Learning?",
        "texts": ["Deep Learning is not...", "Deep learning is..."]})
    assert status == 200 and sorted(r["index"] for r in body) == [0, 1]
    assert body[0]["score"] >= body[1]["score"] and "text" not in body[0]


async def test_speech_schema_and_generate(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s, s.get(
            url(gw, "mock-speech", "generate-speech/schema")) as r:
        assert r.status == 200
        schema = await r.json()
    assert schema[0] == {"desc": "Hey, how are you doing today?", "label": "Prompt",
                         "name": "prompt", "required": True, "type": "string"}
    status, body = await post(gw, "mock-speech", "generate-speech",
                              {f["name"]: f["desc"] for f in schema})
    assert status == 200 and isinstance(body, str)
    with wave.open(io.BytesIO(base64.b64decode(body))) as w:
        assert w.getnframes() > 0
    status, body = await post(gw, "mock-speech", "generate-speech", {"description": "x"})
    assert status == 400 and "'prompt' is required" in body["error"]["message"]


async def test_generate_image_and_translate(gw: Gateway) -> None:
    status, body = await post(gw, "mock-image", "generate-image", {
        "prompt": "A man walking on the moon", "num_inference_steps": 20,
        "high_noise_frac": 8})
    assert status == 200 and base64.b64decode(body).startswith(b"\x89PNG")
    status, body = await post(gw, "mock-translation", "translate",
                              {"text": "A man walking on the moon"}, v1=False)
    assert status == 200
    assert body == {"translation_text": "[en->fr] A man walking on the moon",
                    "source_language": "en", "target_language": "fr"}


async def test_transcript_multipart(gw: Gateway) -> None:
    def upload(name: str, data: bytes, kind: str) -> tuple[int, Any]:
        r = requests.post(url(gw, "mock-transcription", "transcript"),
                          headers={"Authorization": "Bearer x"},
                          files={"file": (name, data, kind)}, timeout=10)
        return r.status_code, r.json()

    status, body = await asyncio.to_thread(upload, "file_name.mp3", tone_wav("hi"), "audio/wav")
    assert status == 200 and "seconds of audio" in body["text"]
    status, body = await asyncio.to_thread(upload, "big.wav", b"RIFF" + bytes(LIMIT), "audio/wav")
    assert status == 413 and "limit" in body["error"]["message"]
    status, body = await asyncio.to_thread(upload, "x.pdf", b"%PDF-1.4", "application/pdf")
    assert status == 415 and "application/pdf" in body["error"]["message"]


async def test_task_mismatch_names_the_task(gw: Gateway) -> None:
    status, body = await post(gw, "mock-embedding", "classify", {"inputs": "x"})
    assert status == 400
    assert "'embedding'" in body["error"]["message"]
    status, body = await post(gw, "mock-chat", "predict", [1, 2])
    assert status == 400 and "'chat'" in body["error"]["message"]
    status, body = await post(gw, "mock-chat", "chat/completions",
                              {"inputs": "x", "bogus": 1})
    assert status == 400 and "bogus" in body["error"]["message"]
    status, body = await post(gw, "mock-chat", "chat/completions",
                              {"inputs": "x", "messages": [{"role": "user", "content": "y"}]})
    assert status == 400 and "not both" in body["error"]["message"]


async def test_per_model_tokens_on_the_oicm_paths(gateway_factory: GatewayFactory,
                                                  tmp_path: Path) -> None:
    from tests.auth.conftest import open_auth_gateway
    from tests.auth.kit import auth_config

    agw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    try:
        _, predict_token = await agw.create("mock-predict")
        base = f"{agw.gw.http}/models/mock-predict/proxy/v1/predict"
        async with aiohttp.ClientSession() as s:
            ok = {"Authorization": f"Bearer {predict_token}"}
            async with s.post(base, json=[[1, 2]], headers=ok) as r:
                assert r.status == 200 and (await r.json())["data"] == [4.0]
            async with s.post(base, json=[[1, 2]]) as r:
                assert r.status == 401
            async with s.post(f"{agw.gw.http}/models/mock-chat/proxy/v1/chat/completions",
                              json={"inputs": "hi"}, headers=ok) as r:
                assert r.status == 403
    finally:
        await agw.channel.close()
