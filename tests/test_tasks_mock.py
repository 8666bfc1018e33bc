"""The built-in mock provider serves every task, through the core's generated stubs: deterministic,
shape-correct answers, and the predict schema check before the (mock) model runs."""

from __future__ import annotations

import asyncio
import io
import math
import struct
import wave
import zlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2

from gateway_common.core_api import INFERENCE, CallOptions, Unary
from gateway_common.defaults import MOCK_MODELS
from gateway_core.in_process import Context
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory


def mock_config() -> dict[str, object]:
    return {"auth": {"enabled": False},
            "models": [{**m, "provider": "mock"} for m in MOCK_MODELS]}


@pytest.fixture
async def stub(gateway_factory: GatewayFactory) -> AsyncIterator[pb_grpc.InferenceAsyncStub]:
    gw: Gateway = await gateway_factory(mock_config())
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        yield pb_grpc.InferenceStub(ch)


def to_value(data: Any) -> struct_pb2.Value:
    value = struct_pb2.Value()
    json_format.ParseDict(data, value)
    return value


def from_value(value: struct_pb2.Value) -> Any:
    return json_format.MessageToDict(value)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    _, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    # Every chunk's CRC is right and the pixels decompress to the declared size.
    pos, idat = 8, b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IDAT":
            idat += body
        pos += 12 + n
    assert len(zlib.decompress(idat)) == h * (1 + 3 * w)
    return w, h


async def test_embed_is_deterministic_unit_vectors(stub: pb_grpc.InferenceAsyncStub) -> None:
    req = pb.EmbedRequest(model="mock-embedding", inputs=["a cat", "a dog", "a cat"])
    resp = await stub.Embed(req, timeout=5)
    assert [e.index for e in resp.embeddings] == [0, 1, 2]
    vectors = [list(e.values) for e in resp.embeddings]
    assert all(len(v) == 384 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert resp.usage.prompt_tokens > 0
    short = await stub.Embed(pb.EmbedRequest(model="embeddings", inputs=["x"], dimensions=8),
                             timeout=5)
    assert len(short.embeddings[0].values) == 8
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(model="mock-embedding", inputs=["x"], dimensions=999),
                         timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "dimensions" in (err.value.details() or "")


async def test_rerank_sorted_by_overlap(stub: pb_grpc.InferenceAsyncStub) -> None:
    resp = await stub.Rerank(pb.RerankRequest(
        model="mock-rerank", query="What is deep learning?",
        texts=["Cooking pasta", "Deep learning is a kind of learning", "What is it"],
        return_text=True), timeout=5)
    assert [r.index for r in resp.results] == [1, 2, 0]
    assert resp.results[0].text == "Deep learning is a kind of learning"
    scores = [r.score for r in resp.results]
    assert scores == sorted(scores, reverse=True)
    top = await stub.Rerank(pb.RerankRequest(model="mock-rerank", query="q", texts=["a", "b"],
                                             top_n=1), timeout=5)
    assert len(top.results) == 1 and top.results[0].text == ""


async def test_classify_labels_sorted(stub: pb_grpc.InferenceAsyncStub) -> None:
    resp = await stub.Classify(pb.ClassifyRequest(model="mock-classifier",
                                                  inputs=["this is good!", "meh"]), timeout=5)
    assert len(resp.results) == 2
    for result in resp.results:
        scores = [s.score for s in result.labels]
        assert scores == sorted(scores, reverse=True)
        assert {s.label for s in result.labels} == {"positive", "neutral", "negative"}
        assert math.isclose(sum(scores), 1.0, rel_tol=1e-5)
    top = await stub.Classify(pb.ClassifyRequest(model="mock-classifier", inputs=["x"], top_k=1),
                              timeout=5)
    assert len(top.results[0].labels) == 1


async def test_speech_schema_then_wav(stub: pb_grpc.InferenceAsyncStub) -> None:
    schema = await stub.GetSpeechSchema(pb.SpeechSchemaRequest(model="mock-speech"), timeout=5)
    assert [f.name for f in schema.fields] == ["prompt", "description"]
    assert schema.fields[0].required and schema.fields[0].type == "string"
    params = struct_pb2.Struct()
    params.update({"prompt": "Hello there", "description": "a calm voice"})
    resp = await stub.GenerateSpeech(pb.SpeechRequest(model="mock-speech", params=params),
                                     timeout=5)
    assert resp.mime_type == "audio/wav"
    with wave.open(io.BytesIO(resp.audio)) as w:
        assert w.getnchannels() == 1 and w.getframerate() == 16000 and w.getnframes() > 1000
    # The OpenAI-style `input` fills the required text field.
    again = await stub.GenerateSpeech(pb.SpeechRequest(model="mock-speech", input="Hello there",
                                                       response_format="pcm"), timeout=5)
    assert again.mime_type == "audio/pcm" and len(again.audio) % 2 == 0 and again.audio
    bad = struct_pb2.Struct()
    bad.update({"volume": 3})
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GenerateSpeech(pb.SpeechRequest(model="mock-speech", params=bad), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "volume" in (err.value.details() or "")


async def test_transcribe_wav_and_stream(stub: pb_grpc.InferenceAsyncStub) -> None:
    speech = await stub.GenerateSpeech(pb.SpeechRequest(model="mock-speech", input="one two"),
                                       timeout=5)
    resp = await stub.Transcribe(pb.TranscribeRequest(
        model="mock-transcription", audio=speech.audio, mime_type="audio/wav"), timeout=5)
    assert "seconds of audio" in resp.text and resp.duration > 0

    async def chunks() -> AsyncIterator[pb.TranscribeChunk]:
        yield pb.TranscribeChunk(header=pb.TranscribeRequest(model="mock-transcription",
                                                             mime_type="audio/wav"))
        for i in range(0, len(speech.audio), 1000):
            yield pb.TranscribeChunk(audio=speech.audio[i:i + 1000])

    streamed = await stub.TranscribeStream(chunks(), timeout=5)
    assert streamed.text == resp.text


async def test_image_png_of_requested_size(stub: pb_grpc.InferenceAsyncStub) -> None:
    resp = await stub.GenerateImage(pb.ImageRequest(model="mock-image", prompt="a moon walk",
                                                    size="32x16", n=2), timeout=5)
    assert len(resp.images) == 2
    assert all(png_size(i.data) == (32, 16) and i.mime_type == "image/png" for i in resp.images)
    assert resp.images[0].data != resp.images[1].data


async def test_translate(stub: pb_grpc.InferenceAsyncStub) -> None:
    resp = await stub.Translate(pb.TranslateRequest(model="mock-translation", text="Hello",
                                                    target_language="de"), timeout=5)
    assert resp.text == "[en->de] Hello" and resp.target_language == "de"


async def test_predict_with_schema(stub: pb_grpc.InferenceAsyncStub) -> None:
    value = to_value([[1, 2, 3], [4, 5, 6]])
    resp = await stub.Predict(pb.PredictRequest(model="mock-predict", json=value), timeout=5)
    assert from_value(resp.outputs) == [1 + 2 * 1.5 + 3 * 2.0, 4 + 7.5 + 12.0]
    assert resp.input_schema[0].type == "tensor" and list(resp.input_schema[0].shape) == [-1, -1]
    assert resp.output_schema[0].dtype == "float64"
    tensors = pb.TensorInput(tensors=[pb.Tensor(dtype="float64", shape=[1, 3],
                                                double_values=[1, 2, 3])])
    typed = await stub.Predict(pb.PredictRequest(model="mock-predict", tensors=tensors),
                               timeout=5)
    assert from_value(typed.outputs) == [10.0]
    value = to_value([[1, "x"]])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Predict(pb.PredictRequest(model="mock-predict", json=value), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "element [0][1]" in (err.value.details() or "") and "float64" in (
        err.value.details() or "")


async def test_task_mismatch_names_the_task(stub: pb_grpc.InferenceAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Embed(pb.EmbedRequest(model="mock-classifier", inputs=["x"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'classification'" in (err.value.details() or "")


def test_packed_vectors_round_trip_through_the_wire_form() -> None:
    from gateway_core.providers import tasks_wire as core_wire
    from http_edge.dialects import openai_tasks_wire as edge_wire

    vectors = [[0.5, -1.25, 3.0], [0.125, 2.0, -0.0], [7.0] * 300]  # float32-exact
    resp = core_wire.embed_response("m", [core_wire.packed_vector(v) for v in vectors])
    assert resp.model == "m" and [e.index for e in resp.embeddings] == [0, 1, 2]
    assert [list(e.values) for e in resp.embeddings] == vectors
    again = pb.EmbedResponse.FromString(resp.SerializeToString())
    assert [(i, edge_wire.vector_floats(p)) for i, p in edge_wire.packed_vectors(again)] == [
        (e.index, list(e.values)) for e in resp.embeddings]
    # A message built field by field (index set, usage after the vectors) reads the same.
    built = pb.EmbedResponse(model="m", usage=pb.Usage(prompt_tokens=3),
                             embeddings=[pb.Embedding(index=300, values=[1.5, 2.5])])
    [(index, packed)] = edge_wire.packed_vectors(built)
    assert index == 300 and edge_wire.vector_floats(packed) == [1.5, 2.5]
    assert edge_wire.vector_b64(packed) == "AADAPwAAIEA="
    # A vector split in two packed runs and an unpacked float (legal on the wire) is joined.
    wire = (b"\x12\x0f" + b"\x08\x02" + b"\x12\x04" + struct.pack("<f", 1.0)
            + b"\x15" + struct.pack("<f", 2.0) + b"\x12\x00")
    split = pb.EmbedResponse.FromString(wire)
    assert [(i, edge_wire.vector_floats(p)) for i, p in edge_wire.packed_vectors(split)] == [
        (2, [1.0, 2.0])]
    assert core_wire.packed_vector("AADAPwAAIEA=") == struct.pack("<2f", 1.5, 2.5)
    for bad in ([], ["x"], [None], "AAA", "not base64!"):
        with pytest.raises((TypeError, ValueError)):
            core_wire.packed_vector(bad)


async def test_chat_template_over_grpc(stub: pb_grpc.InferenceAsyncStub) -> None:
    req = pb.ChatRequest(model="mock-chat", chat_template="Q: {{ messages[-1].content }} A:",
                         messages=[pb.ChatMessage(role="user", content="capital of UAE?")])
    resp = await stub.Chat(req, timeout=5)
    assert resp.choices[0].message.content == "This is a mock reply to: Q: capital of UAE? A:"
    assert resp.choices[0].message.role == "assistant"
    chunks = [c async for c in stub.ChatStream(req, timeout=5)]
    assert "".join(ch.delta.content for c in chunks for ch in c.choices) == \
        resp.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].HasField("usage")
    bad = pb.ChatRequest(model="mock-chat", chat_template="{% if %}",
                         messages=[pb.ChatMessage(role="user", content="x")])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Chat(bad, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not valid Jinja" in (err.value.details() or "")


@pytest.mark.parametrize("core_transport", ["grpc"])  # the core's port only: one edge is enough
async def test_transcribe_stream_refuses_early(gateway_factory: GatewayFactory) -> None:
    """The core refuses a client stream on its first bad chunk, not after the whole upload.

    Its status is read from the core's own handler (behind its interceptors): over the network,
    grpc's Python client that is still writing when the core ends the call reports INTERNAL
    "Internal error from Core" instead of the core's status (its failed write wins). Over the
    port, the test checks that the call ends early and not OK."""
    gw = await gateway_factory({**mock_config(), "limits": {"max_upload_bytes": 1_000_000}})
    pulled = 0

    async def chunks(kind: str, pieces: int) -> AsyncIterator[pb.TranscribeChunk]:
        nonlocal pulled
        yield pb.TranscribeChunk(header=pb.TranscribeRequest(model="mock-transcription",
                                                             mime_type=kind))
        for _ in range(pieces):
            pulled += 1
            yield pb.TranscribeChunk(audio=b"\0" * 100_000)

    assert gw.core.in_process is not None
    rpc: Unary[Any, pb.TranscribeResponse] = Unary(INFERENCE, "TranscribeStream", pb.TranscribeResponse)
    for kind, pieces, words in (("text/html", 3, "text/html"),
                                ("audio/wav", 200, "larger than the limit"),
                                ("audio/wav", 0, "empty")):
        pulled = 0
        ctx = Context(CallOptions(10.0), asyncio.get_running_loop())
        handler = await gw.core.in_process.behavior(rpc, "stream_unary", ctx)
        with pytest.raises(grpc.aio.AbortError):
            await handler(chunks(kind, pieces), ctx)
        assert ctx.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in ctx.details()
        assert pulled < 20 or pieces < 20  # stopped reading at the limit (10 chunks)

    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        call = pb_grpc.InferenceStub(ch).TranscribeStream(timeout=10)
        written = 0
        with pytest.raises(grpc.aio.AioRpcError):
            await call.write(pb.TranscribeChunk(header=pb.TranscribeRequest(
                model="mock-transcription", mime_type="audio/wav")))
            for _ in range(200):
                await call.write(pb.TranscribeChunk(audio=b"\0" * 100_000))
                written += 1
            await call.done_writing()
            await call
        assert written < 200 and await call.code() != grpc.StatusCode.OK
