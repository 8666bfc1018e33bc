"""A fake OpenAI-compatible server for the non-chat tasks, on loopback: ``/v1/embeddings``,
``/v1/rerank``, ``/v1/audio/transcriptions``, ``/v1/audio/speech``, ``/v1/images/generations``.

It speaks OpenAI's real wire format (vLLM's for rerank): embeddings as float lists or as base64
little-endian float32 per ``encoding_format``; transcriptions read a multipart ``file`` and answer
``{"text"}``; speech answers raw audio bytes with the format's content type; images answer
``{"created", "data": [{"b64_json"}]}`` or a URL it serves itself. The ``model`` field picks a
behaviour: ``garbage`` (200 with a body that is not JSON), ``bad-shape`` (200 JSON of the wrong
shape), ``error-500``, ``url`` (images as URLs). Everything it received is kept in ``requests``.
"""

from __future__ import annotations

import base64
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.loopback import serve_app

DIM = 8


def vector(text: str, dim: int = DIM) -> list[float]:
    """A fixed vector per text (float32-exact values, so base64 round trips compare equal)."""
    seed = zlib.crc32(text.encode())
    return [((seed >> (i % 24)) % 97) / 128.0 for i in range(dim)]


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" + b"\xff\x00\x00" * 2 + b"\x00" + b"\x00\xff\x00" * 2)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels)
            + chunk(b"IEND", b""))


SPEECH_BYTES = b"ID3\x04\x00fake-mp3-audio" + bytes(range(256))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)


@dataclass
class FakeOpenAIMedia:
    requests: list[Received] = field(default_factory=list)
    # Vector length, and whether to keep what was received (off for benchmarks).
    dim: int = DIM
    record: bool = True
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/rerank", self.rerank)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/speech", self.speech)
        app.router.add_post("/v1/images/generations", self.images)
        app.router.add_get("/files/{name}", self.files)
        return app

    async def start(self) -> FakeOpenAIMedia:
        self.runner, self.port = await serve_app(self.app(), handler_cancellation=False)
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _json(self, request: web.Request) -> dict[str, Any]:
        body: dict[str, Any] = orjson.loads(await request.read())
        if self.record:
            self.requests.append(Received(request.path, dict(request.headers), body))
        return body

    @staticmethod
    def _special(model: str) -> web.Response | None:
        if model == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if model == "error-500":
            return web.Response(status=500, text="Traceback: secret detail")
        return None

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if (special := self._special(body["model"])) is not None:
            return special
        if body["model"] == "bad-shape":
            return web.json_response({"object": "list", "data": [{"index": 0}]})
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for i, text in enumerate(inputs):
            vec = vector(text, self.dim)
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        data.reverse()  # servers may answer out of order: the index says where each goes
        return web.json_response({"object": "list", "data": data, "model": body["model"],
                                  "usage": {"prompt_tokens": 3 * len(inputs),
                                            "total_tokens": 3 * len(inputs)}})

    async def rerank(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if (special := self._special(body["model"])) is not None:
            return special
        query = set(body["query"].lower().split())
        results = [{"index": i, "document": {"text": d},
                    "relevance_score": len(query & set(d.lower().split())) / (len(query) or 1)}
                   for i, d in enumerate(body["documents"])]
        results.sort(key=lambda r: -float(r["relevance_score"]))  # type: ignore[arg-type]
        if body.get("top_n"):
            results = results[: body["top_n"]]
        return web.json_response({"id": "rerank-fake", "model": body["model"],
                                  "usage": {"total_tokens": 11}, "results": results})

    async def transcriptions(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        files = {k: (v.filename, v.content_type, v.file.read()) for k, v in form.items()
                 if isinstance(v, web.FileField)}
        if self.record:
            self.requests.append(Received(request.path, dict(request.headers), fields, files))
        if (special := self._special(fields.get("model", ""))) is not None:
            return special
        if fields.get("model") == "bad-shape":
            return web.json_response({"transcript": "wrong key"})
        audio = files["file"][2]
        return web.json_response({"text": f"heard {len(audio)} bytes"})

    async def speech(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if (special := self._special(body["model"])) is not None:
            return special
        types = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/ogg"}
        fmt = body.get("response_format", "mp3")
        return web.Response(body=SPEECH_BYTES, content_type=types.get(fmt, "audio/mpeg"))

    async def images(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if (special := self._special(body["model"])) is not None:
            return special
        if body["model"] == "bad-shape":
            return web.json_response({"created": 1, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]})
        n = int(body.get("n") or 1)
        if body["model"] == "url":
            data = [{"url": f"http://127.0.0.1:{self.port}/files/img{i}.png"} for i in range(n)]
        else:
            data = [{"b64_json": base64.b64encode(tiny_png()).decode(),
                     "revised_prompt": body["prompt"] + "!"} for _ in range(n)]
        return web.json_response({"created": int(time.time()), "data": data})

    async def files(self, request: web.Request) -> web.Response:
        return web.Response(body=tiny_png(), content_type="image/png")
