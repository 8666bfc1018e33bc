"""The openai dialect's task routes with the official SDK (its default base64 embeddings, a
transcription upload, a speech download, images), in front of the mock provider and of a fake
OpenAI-compatible media server; bad input and bad upstream answers; the same tasks over gRPC."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import aiohttp
import grpc
import openai
import pytest

from gateway_core.providers.mock_media import tone_wav
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory
from tests.fakes.openai_media import DIM, SPEECH_BYTES, FakeOpenAIMedia, tiny_png, vector

LIMIT = 300_000


def config(url: str) -> dict[str, Any]:
    def up(gid: str, task: str, upstream: str, **kw: Any) -> dict[str, Any]:
        return {"id": gid, "task": task, "provider": "openai", "upstream_url": url,
                "upstream_model": upstream, **kw}

    return {
        "auth": {"enabled": False},
        "limits": {"max_upload_bytes": LIMIT},
        "models": [
            {"id": "mock-chat", "task": "chat", "provider": "mock"},
            {"id": "mock-embedding", "task": "embedding", "provider": "mock"},
            {"id": "mock-rerank", "task": "rerank", "provider": "mock"},
            {"id": "mock-transcription", "task": "transcription", "provider": "mock"},
            {"id": "mock-speech", "task": "speech", "provider": "mock"},
            {"id": "mock-image", "task": "image", "provider": "mock"},
            up("up-embed", "embedding", "text-embed", options={"embedding_encoding": "float"}),
            up("up-embed-b64", "embedding", "text-embed"),
            up("up-embed-garbage", "embedding", "garbage"),
            up("up-embed-badshape", "embedding", "bad-shape"),
            up("up-rerank", "rerank", "reranker"),
            up("up-whisper", "transcription", "whisper-1"),
            up("up-whisper-badshape", "transcription", "bad-shape"),
            up("up-tts", "speech", "tts-1"),
            up("up-tts-500", "speech", "error-500"),
            up("up-image", "image", "dall-e"),
            up("up-image-url", "image", "url"),
            up("up-image-badshape", "image", "bad-shape"),
        ],
    }


@pytest.fixture
async def gw(media: FakeOpenAIMedia, gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory(config(media.base_url))


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="unused", max_retries=0)


async def test_sdk_embeddings_default_base64_equals_float(gw: Gateway) -> None:
    c = client(gw)
    default = await c.embeddings.create(model="mock-embedding", input=["hello", "world"])
    floats = await c.embeddings.create(model="mock-embedding", input=["hello", "world"],
                                       encoding_format="float")
    assert len(default.data) == 2 and len(default.data[0].embedding) == 384
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens > 0 and default.model == "mock-embedding"


async def test_sdk_embeddings_through_openai_upstream(gw: Gateway,
                                                      media: FakeOpenAIMedia) -> None:
    c = client(gw)
    for model, upstream_format in (("up-embed", "float"), ("up-embed-b64", "base64")):
        resp = await c.embeddings.create(model=model, input=["a", "bb", "ccc"], dimensions=8)
        assert [d.embedding for d in resp.data] == [vector(t) for t in ("a", "bb", "ccc")]
        assert [d.index for d in resp.data] == [0, 1, 2]
        assert resp.usage.prompt_tokens == 9
        sent = media.requests[-1].body
        assert sent == {"model": "text-embed", "input": ["a", "bb", "ccc"],
                        "encoding_format": upstream_format, "dimensions": 8}
    single = await c.embeddings.create(model="up-embed", input="one", encoding_format="float")
    assert single.data[0].embedding == vector("one") and len(vector("one")) == DIM


async def test_embedding_bad_upstream_answers_are_502(gw: Gateway) -> None:
    c = client(gw)
    for model in ("up-embed-garbage", "up-embed-badshape"):
        with pytest.raises(openai.InternalServerError) as err:
            await c.embeddings.create(model=model, input="x")
        assert err.value.status_code == 502
        assert "upstream" in str(err.value.message)


async def test_embedding_bad_input(gw: Gateway) -> None:
    c = client(gw)
    with pytest.raises(openai.BadRequestError) as err:
        await c.embeddings.create(model="mock-chat", input="x")
    assert "'chat'" in err.value.message  # names the model's task
    with pytest.raises(openai.BadRequestError) as err:
        await c.embeddings.create(model="mock-embedding", input=[[1, 2, 3]])
    assert "token ids" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        await c.embeddings.create(model="mock-embedding", input="x",
                                  extra_body={"encoding_format": "int8"})
    assert "encoding_format" in err.value.message
    with pytest.raises(openai.NotFoundError):
        await c.embeddings.create(model="nope", input="x")


async def test_rerank_mock_and_upstream(gw: Gateway, media: FakeOpenAIMedia) -> None:
    body = {"query": "deep learning", "documents": ["cooking", "deep learning is fun",
                                                    {"text": "learning"}], "top_n": 2}
    async with aiohttp.ClientSession() as s:
        for model in ("mock-rerank", "up-rerank"):
            async with s.post(f"{gw.http}/v1/rerank", json={"model": model, **body}) as r:
                assert r.status == 200, await r.text()
                data = await r.json()
            assert [x["index"] for x in data["results"]] == [1, 2]
            assert data["results"][0]["document"] == {"text": "deep learning is fun"}
            scores = [x["relevance_score"] for x in data["results"]]
            assert scores == sorted(scores, reverse=True)
        assert media.requests[-1].body["documents"][2] == "learning"
        async with s.post(f"{gw.http}/v1/rerank", json={"model": "mock-rerank",
                                                        "query": "q", "documents": []}) as r:
            assert r.status == 400
            assert "documents" in (await r.json())["error"]["message"]


async def test_sdk_transcription_upload(gw: Gateway, media: FakeOpenAIMedia) -> None:
    c = client(gw)
    wav = tone_wav("hello there")
    resp = await c.audio.transcriptions.create(model="mock-transcription",
                                               file=("speech.wav", wav, "audio/wav"))
    assert "seconds of audio" in resp.text
    up = await c.audio.transcriptions.create(model="up-whisper", file=("a.wav", wav),
                                             language="en", response_format="json")
    assert up.text == f"heard {len(wav)} bytes"
    sent = media.requests[-1]
    assert sent.body["model"] == "whisper-1" and sent.body["language"] == "en"
    assert sent.files["file"] == ("a.wav", "audio/wav", wav)
    text = await c.audio.transcriptions.create(model="up-whisper", file=("a.wav", wav),
                                               response_format="text")
    assert isinstance(text, str) and text == f"heard {len(wav)} bytes"


async def test_transcription_of_raw_bytes_is_sniffed(gw: Gateway,
                                                     media: FakeOpenAIMedia) -> None:
    wav = tone_wav("x")
    form = aiohttp.FormData()
    form.add_field("model", "up-whisper")
    form.add_field("file", wav, filename="blob", content_type="application/octet-stream")
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}/v1/audio/transcriptions", data=form) as r:
        assert r.status == 200, await r.text()
    assert media.requests[-1].files["file"][1] == "audio/wav"


async def test_transcription_bad_input(gw: Gateway) -> None:
    c = client(gw)
    with pytest.raises(openai.APIStatusError) as err:
        await c.audio.transcriptions.create(model="mock-transcription",
                                            file=("big.wav", b"RIFF" + bytes(LIMIT + 10)))
    assert err.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as err:
        await c.audio.transcriptions.create(model="mock-transcription",
                                            file=("notes.txt", b"hello", "text/plain"))
    assert err.value.status_code == 415 and "text/plain" in str(err.value.message)
    with pytest.raises(openai.APIStatusError) as err:
        await c.audio.transcriptions.create(model="mock-transcription",
                                            file=("blob", b"definitely not audio"))
    assert err.value.status_code == 415
    with pytest.raises(openai.BadRequestError) as err:
        await c.audio.transcriptions.create(model="mock-chat", file=("a.wav", tone_wav("x")))
    assert "'chat'" in err.value.message
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gw.http}/v1/audio/transcriptions", json={"model": "x"}) as r:
            assert r.status == 415
            assert "multipart/form-data" in (await r.json())["error"]["message"]
        form = aiohttp.FormData()
        form.add_field("model", "mock-transcription")
        form.add_field("other", b"x", filename="x.wav")
        async with s.post(f"{gw.http}/v1/audio/transcriptions", data=form) as r:
            assert r.status == 400 and "'file' is required" in (await r.json())["error"]["message"]
        form = aiohttp.FormData()
        form.add_field("model", "mock-transcription")
        form.add_field("prompt", "word " * 20_000)
        form.add_field("file", tone_wav("x"), filename="x.wav")
        async with s.post(f"{gw.http}/v1/audio/transcriptions", data=form) as r:
            assert r.status == 400 and "'prompt' is too long" in (await r.json())["error"][
                "message"]
    with pytest.raises(openai.InternalServerError) as err:
        await c.audio.transcriptions.create(model="up-whisper-badshape",
                                            file=("a.wav", tone_wav("x")))
    assert err.value.status_code == 502


async def test_sdk_speech_download(gw: Gateway, media: FakeOpenAIMedia) -> None:
    c = client(gw)
    resp = await c.audio.speech.create(model="mock-speech", voice="alloy", input="Hello there",
                                       response_format="wav")
    assert resp.response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(resp.content)) as w:
        assert w.getnframes() > 0
    up = await c.audio.speech.create(model="up-tts", voice="nova", input="Hi", speed=1.5)
    assert up.content == SPEECH_BYTES
    assert up.response.headers["content-type"] == "audio/mpeg"
    assert media.requests[-1].body == {"model": "tts-1", "input": "Hi", "voice": "nova",
                                       "response_format": "mp3", "speed": 1.5}
    with pytest.raises(openai.InternalServerError) as err:
        await c.audio.speech.create(model="up-tts-500", voice="alloy", input="Hi")
    assert err.value.status_code == 502 and "secret" not in str(err.value.message)
    with pytest.raises(openai.BadRequestError):
        await c.audio.speech.create(model="mock-speech", voice="alloy", input="Hi",
                                    extra_body={"response_format": "ogg-vorbis"})


async def test_sdk_images(gw: Gateway, media: FakeOpenAIMedia) -> None:
    c = client(gw)
    resp = await c.images.generate(model="mock-image", prompt="a moon walk", size="16x16")
    assert resp.data is not None
    png = base64.b64decode(resp.data[0].b64_json or "")
    assert png.startswith(b"\x89PNG")
    up = await c.images.generate(model="up-image", prompt="moon", n=2,
                                 extra_body={"num_inference_steps": 20})
    assert up.data is not None and len(up.data) == 2
    assert base64.b64decode(up.data[0].b64_json or "") == tiny_png()
    assert up.data[0].revised_prompt == "moon!"
    assert media.requests[-1].body["num_inference_steps"] == 20
    assert media.requests[-1].body["response_format"] == "b64_json"
    fetched = await c.images.generate(model="up-image-url", prompt="moon")
    assert fetched.data is not None
    assert base64.b64decode(fetched.data[0].b64_json or "") == tiny_png()
    as_url = await c.images.generate(model="mock-image", prompt="x", response_format="url")
    assert as_url.data is not None and (as_url.data[0].url or "").startswith(
        "data:image/png;base64,")
    with pytest.raises(openai.InternalServerError) as err:
        await c.images.generate(model="up-image-badshape", prompt="moon")
    assert err.value.status_code == 502 and "image" in str(err.value.message)


async def test_same_tasks_over_grpc(gw: Gateway, media: FakeOpenAIMedia) -> None:
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        emb = await stub.Embed(pb.EmbedRequest(model="up-embed", inputs=["x"]), timeout=5)
        assert list(emb.embeddings[0].values) == vector("x")
        rr = await stub.Rerank(pb.RerankRequest(model="up-rerank", query="a b",
                                                texts=["a", "a b", "c"]), timeout=5)
        assert [r.index for r in rr.results] == [1, 0, 2]
        wav = tone_wav("x")
        tr = await stub.Transcribe(pb.TranscribeRequest(model="up-whisper", audio=wav,
                                                        mime_type="audio/x-wav"), timeout=5)
        assert tr.text == f"heard {len(wav)} bytes"
        assert media.requests[-1].files["file"][:2] == ("audio.wav", "audio/wav")
        sp = await stub.GenerateSpeech(pb.SpeechRequest(model="up-tts", input="hi",
                                                        response_format="opus"), timeout=5)
        assert sp.audio == SPEECH_BYTES and sp.mime_type == "audio/ogg"
        im = await stub.GenerateImage(pb.ImageRequest(model="up-image", prompt="p"), timeout=5)
        assert im.images[0].data == tiny_png() and im.images[0].mime_type == "image/png"
        at_limit = await stub.Transcribe(pb.TranscribeRequest(
            model="up-whisper", audio=b"x" * LIMIT, mime_type="audio/wav"), timeout=5)
        assert at_limit.text == f"heard {LIMIT} bytes"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Transcribe(pb.TranscribeRequest(model="up-whisper", audio=b"x" * (LIMIT + 1),
                                                       mime_type="audio/wav"), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(err.value.trailing_metadata() or ())["igw-reason"] == "payload_too_large"
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Transcribe(pb.TranscribeRequest(model="up-whisper", mime_type="audio/wav"),
                                  timeout=5)
        assert "empty" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Transcribe(pb.TranscribeRequest(model="up-whisper", audio=b"abc",
                                                       mime_type="image/png"), timeout=5)
        assert dict(err.value.trailing_metadata() or ())["igw-reason"] == \
            "unsupported_media_type"


