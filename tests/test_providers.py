"""Each provider against a fake server speaking its real wire format, through the gRPC stubs and
over HTTP (oicm paths, and the openai SDK where the task has an OpenAI route): TEI, TGI's native
API, MLflow model serving (signature inline, from an MLmodel file, from V2 metadata), and the
generic JSON provider for TTS, translation and images."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import openai
import pytest
from google.protobuf import json_format, struct_pb2

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory
from tests.fakes.model_servers import (
    TGI_REPLY,
    FakeJsonModel,
    FakeMLflow,
    FakeTEI,
    FakeTGI,
    tei_vector,
)

COLUMNS_SIGNATURE = {
    "inputs": [{"type": "double", "name": "age"}, {"type": "long", "name": "visits"},
               {"type": "string", "name": "city", "required": False}],
    "outputs": [{"type": "double", "name": "risk"}],
}
TTS_FIELDS = [
    {"name": "prompt", "label": "Prompt", "desc": "Hey, how are you doing today?",
     "type": "string", "required": True},
    {"name": "description", "label": "Speaker Description",
     "desc": "A female speaker with a slightly low-pitched voice", "type": "string",
     "required": True},
]


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, Any]]:
    started = {"tei": await FakeTEI().start(), "tgi": await FakeTGI().start(),
               "mlflow": await FakeMLflow().start(), "json": await FakeJsonModel().start()}
    yield started
    for s in started.values():
        await s.stop()


@pytest.fixture
async def gw(servers: dict[str, Any], gateway_factory: GatewayFactory) -> Gateway:
    tei, tgi = servers["tei"].base_url, servers["tgi"].base_url
    ml, js = servers["mlflow"].base_url, servers["json"].base_url

    def m(gid: str, task: str, provider: str, url: str, **kw: Any) -> dict[str, Any]:
        return {"id": gid, "task": task, "provider": provider, "upstream_url": url, **kw}

    return await gateway_factory({"auth": {"enabled": False}, "models": [
        m("tei-embed", "embedding", "tei", tei),
        m("tei-rerank", "rerank", "tei", tei),
        m("tei-classify", "classification", "tei", tei),
        m("tgi", "chat", "tgi", tgi, tasks=["completion"]),
        m("tgi-templated", "chat", "tgi", tgi, options={
            "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"}),
        m("ml-columns", "predict", "mlflow", ml, options={"signature": COLUMNS_SIGNATURE}),
        m("ml-mlmodel", "predict", "mlflow", ml,
          options={"signature_url": f"{ml}/artifacts/MLmodel"}),
        m("ml-v2", "predict", "mlflow", ml,
          options={"signature_url": f"{ml}/v2/models/diabetes"}),
        m("ml-free", "predict", "mlflow", ml),
        m("tts", "speech", "http", f"{js}/tts",
          options={"fields": TTS_FIELDS, "result": "base64", "result_path": "audio"}),
        m("tts-raw", "speech", "http", f"{js}/tts-raw",
          options={"fields": TTS_FIELDS[:1], "result": "binary"}),
        m("tts-garbage", "speech", "http", f"{js}/garbage",
          options={"fields": TTS_FIELDS[:1], "result": "base64", "result_path": "audio"}),
        m("translator", "translation", "http", f"{js}/translate", options={
            "fields": [{"name": "text", "required": True}, {"name": "src_lang"},
                       {"name": "tgt_lang"}, {"name": "max_length", "type": "integer"}],
            "source_language_field": "src_lang", "target_language_field": "tgt_lang",
            "static": {"tgt_lang": "fr"}, "result_path": "0.translation_text"}),
        m("painter", "image", "http", f"{js}/image", options={
            "fields": [{"name": "prompt", "required": True},
                       {"name": "num_inference_steps", "type": "integer"}],
            "result": "base64", "result_path": "images.0"}),
    ]})


@pytest.fixture
async def stub(gw: Gateway) -> AsyncIterator[pb_grpc.InferenceAsyncStub]:
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        yield pb_grpc.InferenceStub(ch)


async def post(gw: Gateway, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(f"{gw.http}{path}", json=body) as r:
        return r.status, json.loads(await r.text())


def py(v: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(v)


# ---------------------------------------------------------------------------------------------
# TEI


async def test_tei_embed(gw: Gateway, stub: pb_grpc.InferenceAsyncStub,
                         servers: dict[str, Any]) -> None:
    tei: FakeTEI = servers["tei"]
    resp = await stub.Embed(pb.EmbedRequest(model="tei-embed", inputs=["a", "b"],
                                            normalize=False), timeout=5)
    assert [list(e.values) for e in resp.embeddings] == [tei_vector("a"), tei_vector("b")]
    assert tei.requests[-1].body == {"inputs": ["a", "b"], "normalize": False, "truncate": False}
    sdk = openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="x", max_retries=0)
    emb = await sdk.embeddings.create(model="tei-embed", input="hello")  # base64 by default
    assert emb.data[0].embedding == tei_vector("hello")
    assert tei.requests[-1].body["normalize"] is True
    status, body = await post(gw, "/models/tei-embed/proxy/v1/embed", {"inputs": "hi"})
    assert status == 200 and body == [tei_vector("hi")]
    status, body = await post(gw, "/models/tei-embed/proxy/embed", {"inputs": "x" * 300})
    # TEI's 413 and its error_type pass through.
    assert status == 413 and "less than 512 tokens" in body["error"]["message"]
    assert body["error"]["type"] == "validation"
    status, body = await post(gw, "/models/tei-embed/proxy/embed", {"inputs": "garbage"})
    assert status == 502 and "not JSON" in body["error"]["message"]


async def test_tei_rerank(gw: Gateway, stub: pb_grpc.InferenceAsyncStub) -> None:
    resp = await stub.Rerank(pb.RerankRequest(model="tei-rerank", query="deep learning",
                                              texts=["cooking", "deep learning", "learning"],
                                              top_n=2, return_text=True), timeout=5)
    assert [(r.index, r.text) for r in resp.results] == [(1, "deep learning"), (2, "learning")]
    status, body = await post(gw, "/models/tei-rerank/proxy/v1/rerank", {
        "query": "What is Deep Learning?",
        "texts": ["Deep Learning is not...", "Deep learning is..."], "return_text": True})
    assert status == 200 and len(body) == 2 and body[0]["score"] >= body[1]["score"]
    assert body[0]["text"].startswith("Deep")
    async with aiohttp.ClientSession() as s, s.post(f"{gw.http}/v1/rerank", json={
            "model": "tei-rerank", "query": "q", "documents": ["q", "z"]}) as r:
        assert (await r.json())["results"][0] == {"index": 0, "relevance_score": 1.0,
                                                  "document": {"text": "q"}}


async def test_tei_classify_single_and_batch(gw: Gateway, stub: pb_grpc.InferenceAsyncStub,
                                             servers: dict[str, Any]) -> None:
    tei: FakeTEI = servers["tei"]
    one = await stub.Classify(pb.ClassifyRequest(model="tei-classify", inputs=["I like you"]),
                              timeout=5)
    assert tei.requests[-1].body["inputs"] == "I like you"
    scores = [s.score for s in one.results[0].labels]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3
    # Two texts are a batch of two, not one sentence pair.
    two = await stub.Classify(pb.ClassifyRequest(model="tei-classify", inputs=["a", "b"],
                                                 top_k=1), timeout=5)
    assert tei.requests[-1].body["inputs"] == [["a"], ["b"]]
    assert [len(r.labels) for r in two.results] == [1, 1]
    status, body = await post(gw, "/models/tei-classify/proxy/classify",
                              {"inputs": "this is good!"})
    assert status == 200 and [c["score"] for c in body["classification"]] == sorted(
        (c["score"] for c in body["classification"]), reverse=True)
    status, body = await post(gw, "/models/tei-classify/proxy/v1/predict",
                              {"inputs": "Abu Dhabi is great!"})
    assert status == 200 and {p["label"] for p in body} == {"joy", "anger", "fear"}


# ---------------------------------------------------------------------------------------------
# TGI


async def test_tgi_generate_and_parameters(stub: pb_grpc.InferenceAsyncStub,
                                           servers: dict[str, Any]) -> None:
    tgi: FakeTGI = servers["tgi"]
    resp = await stub.Complete(pb.CompletionRequest(
        model="tgi", prompt="What is deep learning?",
        params=pb.SamplingParams(temperature=0.0, top_p=1.0, max_tokens=3, stop=["\n"])),
        timeout=5)
    assert resp.choices[0].text == "".join(TGI_REPLY[:3])
    assert resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 3
    assert tgi.requests[-1].body == {"inputs": "What is deep learning?", "parameters": {
        "details": True, "return_full_text": False, "do_sample": False, "max_new_tokens": 3,
        "stop": ["\n"]}}
    resp = await stub.Complete(pb.CompletionRequest(
        model="tgi", prompt="x", params=pb.SamplingParams(temperature=0.7, top_p=0.9, top_k=5)),
        timeout=5)
    assert resp.choices[0].finish_reason == "stop"
    params = tgi.requests[-1].body["parameters"]
    assert params["temperature"] == pytest.approx(0.7) and params["top_p"] == pytest.approx(0.9)
    assert params["top_k"] == 5 and params["do_sample"] is True
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete(pb.CompletionRequest(model="tgi", prompt="x",
                                                 params=pb.SamplingParams(n=2)), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Complete(pb.CompletionRequest(model="tgi", prompt="garbage"), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "TGI generation" in (err.value.details() or "")


async def test_tgi_chat_stream_with_openai_sdk(gw: Gateway, servers: dict[str, Any]) -> None:
    tgi: FakeTGI = servers["tgi"]
    sdk = openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="x", max_retries=0)
    stream = await sdk.chat.completions.create(
        model="tgi", messages=[{"role": "system", "content": "Be brief"},
                               {"role": "user", "content": "hi"}],
        stream=True, stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    assert text == "".join(TGI_REPLY) and finish == "stop"
    assert usage is not None and usage.completion_tokens == len(TGI_REPLY) + 1
    assert tgi.requests[-1].path == "/generate_stream"
    assert tgi.requests[-1].body["inputs"] == "System: Be brief\n\nUser: hi\n\nAssistant:"
    resp = await sdk.chat.completions.create(
        model="tgi-templated", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "".join(TGI_REPLY)
    assert tgi.requests[-1].body["inputs"] == "<user>hi"


async def test_tgi_oicm_generate_form_and_mid_stream_error(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gw.http}/models/tgi/proxy/v1/chat/completions", json={
                "inputs": "What is Deep Learning?", "max_new_tokens": 200, "do_sample": False,
                "stream": True}) as r:
            lines = [line async for line in r.content]
        deltas = [json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                  for line in lines if line.startswith(b"data: {")]
        assert "".join(deltas) == "".join(TGI_REPLY)
        assert lines[-2:] == [b"data: [DONE]\n", b"\n"]
        async with s.post(f"{gw.http}/models/tgi/proxy/chat/completions", json={
                "inputs": "mid-error", "stream": True}) as r:
            body = await r.read()
        assert b"CUDA OOM" in body and body.endswith(b"data: [DONE]\n\n")


async def test_tgi_client_leaving_cancels_upstream(gw: Gateway,
                                                   servers: dict[str, Any]) -> None:
    tgi: FakeTGI = servers["tgi"]
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}/models/tgi/proxy/v1/chat/completions",
            json={"inputs": "endless", "stream": True}) as r:
        await r.content.readline()
    await asyncio.wait_for(tgi.disconnected.wait(), 5)


# ---------------------------------------------------------------------------------------------
# MLflow


async def test_mlflow_columns_checked_before_the_upstream(gw: Gateway,
                                                          stub: pb_grpc.InferenceAsyncStub,
                                                          servers: dict[str, Any]) -> None:
    ml: FakeMLflow = servers["mlflow"]
    path = "/models/ml-columns/proxy/v1/predict"
    status, body = await post(gw, path, {"dataframe_split": {
        "columns": ["age", "visits"], "data": [[40.5, 3], [20, 1]]}})
    assert status == 200, body
    assert body["data"] == [43.5, 21.0]
    assert body["meta"]["input_schema"][1] == {"type": "long", "name": "visits",
                                               "required": True}
    assert body["meta"]["output_schema"] == [{"type": "double", "name": "risk",
                                              "required": True}]
    assert ml.requests[-1].body == {"dataframe_split": {"columns": ["age", "visits"],
                                                        "data": [[40.5, 3], [20, 1]]}}
    seen = len(ml.requests)
    for bad, expected in (
        ({"dataframe_split": {"columns": ["age"], "data": [[1.0]]}}, "missing column 'visits'"),
        ({"dataframe_records": [{"age": 1, "visits": 2.5}]}, "column 'visits' row 0"),
        ([{"age": "old", "visits": 1}], "column 'age' row 0 is a string 'old'"),
        ({"dataframe_split": {"columns": ["age", "visits"], "data": [[1]]}},
         "row 0 has 1 values for 2 columns"),
        ({"inputs": [[1, 2]]}, "the model takes a table"),
    ):
        status, body = await post(gw, path, bad)
        assert status == 400, bad
        assert expected in body["error"]["message"], body
    assert len(ml.requests) == seen  # none of them reached the upstream
    tab = pb.TabularInput(columns=["age", "visits", "city"])
    tab.rows.add().extend([30.0, 2, "Abu Dhabi"])
    resp = await stub.Predict(pb.PredictRequest(model="ml-columns", tabular=tab), timeout=5)
    assert py(resp.outputs) == [32.0]
    assert ml.requests[-1].body["dataframe_split"]["data"] == [[30.0, 2, "Abu Dhabi"]]


async def test_mlflow_signature_from_mlmodel_matches_the_seed(gw: Gateway,
                                                              stub: pb_grpc.InferenceAsyncStub,
                                                              servers: dict[str, Any]) -> None:
    ml: FakeMLflow = servers["mlflow"]
    rows = [[float(i + j) for i in range(10)] for j in range(2)]
    status, body = await post(gw, "/models/ml-mlmodel/proxy/predict", rows)
    assert status == 200, body
    assert body == {"data": [45.0, 55.0], "meta": {
        "input_schema": [{"tensor-spec": {"dtype": "float64", "shape": [-1, 10]},
                          "type": "tensor"}],
        "output_schema": [{"tensor-spec": {"dtype": "float64", "shape": [-1]},
                           "type": "tensor"}]}}
    assert ml.requests[-1].body == {"inputs": rows}
    status, body = await post(gw, "/models/ml-mlmodel/proxy/v1/predict", [1, 2, 3])
    assert status == 400
    assert "dimension 1 must be 10, got 3" in body["error"]["message"]
    status, body = await post(gw, "/models/ml-v2/proxy/v1/predict", {"inputs": [list(range(10))]})
    assert status == 200 and body["data"] == [45.0]
    assert body["meta"]["input_schema"][0]["tensor-spec"]["shape"] == [-1, 10]
    tensors = pb.TensorInput(tensors=[pb.Tensor(dtype="float64", shape=[1, 10],
                                                double_values=[1.0] * 10)])
    resp = await stub.Predict(pb.PredictRequest(model="ml-mlmodel", tensors=tensors), timeout=5)
    assert py(resp.outputs) == [10.0]
    assert resp.input_schema[0].shape == [-1, 10]


async def test_mlflow_without_signature_and_bad_answers(gw: Gateway) -> None:
    status, body = await post(gw, "/models/ml-free/proxy/predict", {"instances": [[1, 2]]})
    assert status == 200 and body == {"data": [3.0], "meta": {"input_schema": [],
                                                              "output_schema": []}}
    status, body = await post(gw, "/models/ml-free/proxy/predict", ["garbage"])
    assert status == 502 and "not JSON" in body["error"]["message"]
    status, body = await post(gw, "/models/ml-free/proxy/predict", {"nothing": 1})
    assert status == 400 and "inputs" in body["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Generic JSON provider: TTS, translation, images


async def test_tts_schema_and_generate(gw: Gateway, stub: pb_grpc.InferenceAsyncStub,
                                       servers: dict[str, Any]) -> None:
    js: FakeJsonModel = servers["json"]
    async with aiohttp.ClientSession() as s, s.get(
            f"{gw.http}/models/tts/proxy/v1/generate-speech/schema") as r:
        assert await r.json() == TTS_FIELDS
    status, body = await post(gw, "/models/tts/proxy/generate-speech", {
        "prompt": "Hey, how are you doing today?",
        "description": "A female speaker with a slightly low-pitched voice"})
    assert status == 200
    with wave.open(io.BytesIO(base64.b64decode(body))) as w:
        assert w.getframerate() == 16000
    assert js.requests[-1].body["description"].startswith("A female")
    for bad, expected in (({"prompt": "x"}, "'description' is required"),
                          ({"prompt": "x", "description": "y", "pitch": 3}, "unknown field"),
                          ({"prompt": 1, "description": "y"}, "'prompt' must be a string")):
        status, body = await post(gw, "/models/tts/proxy/generate-speech", bad)
        assert status == 400 and expected in body["error"]["message"]
    sdk = openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="x", max_retries=0)
    audio = await sdk.audio.speech.create(model="tts-raw", voice="alloy", input="Hello")
    assert audio.content.startswith(b"RIFF") and audio.response.headers["content-type"] == \
        "audio/wav"
    assert js.requests[-1].body == {"prompt": "Hello"}
    schema = await stub.GetSpeechSchema(pb.SpeechSchemaRequest(model="tts"), timeout=5)
    assert [f.name for f in schema.fields] == ["prompt", "description"]
    status, body = await post(gw, "/models/tts-garbage/proxy/generate-speech", {"prompt": "x"})
    assert status == 502


async def test_translation_and_image(gw: Gateway, stub: pb_grpc.InferenceAsyncStub,
                                     servers: dict[str, Any]) -> None:
    js: FakeJsonModel = servers["json"]
    status, body = await post(gw, "/models/translator/proxy/v1/translate",
                              {"text": "A man walking on the moon", "tgt_lang": "de",
                               "max_length": 40})
    assert status == 200
    assert body["translation_text"] == "de:A man walking on the moon"
    assert js.requests[-1].body == {"text": "A man walking on the moon", "tgt_lang": "de",
                                    "max_length": 40}
    resp = await stub.Translate(pb.TranslateRequest(model="translator", text="Hello",
                                                    source_language="en"), timeout=5)
    assert resp.text == "fr:Hello"  # the static target language
    assert js.requests[-1].body == {"text": "Hello", "src_lang": "en", "tgt_lang": "fr"}
    status, body = await post(gw, "/models/translator/proxy/translate",
                              {"text": "x", "max_length": "long"})
    assert status == 400 and "'max_length' must be an integer" in body["error"]["message"]
    status, body = await post(gw, "/models/painter/proxy/v1/generate-image",
                              {"prompt": "A man walking on the moon", "num_inference_steps": 20})
    assert status == 200 and base64.b64decode(body).startswith(b"\x89PNG")
    assert js.requests[-1].body == {"prompt": "A man walking on the moon",
                                    "num_inference_steps": 20}
    status, body = await post(gw, "/models/painter/proxy/v1/generate-image",
                              {"prompt": "x", "high_noise_frac": 8})
    assert status == 400 and "high_noise_frac" in body["error"]["message"]
