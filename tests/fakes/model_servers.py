"""Fake model servers on loopback, each speaking its real wire format:

- ``FakeTEI``: Text Embeddings Inference's ``/embed``, ``/rerank``, ``/predict`` (a bare pair of
  strings is one sentence pair, a batch is ``[["a"], ["b"]]``; errors ``{"error", "error_type"}``);
- ``FakeTGI``: TGI's ``/generate`` and ``/generate_stream`` (``data:{"token": ...}`` events, the last
  with ``generated_text`` and ``details``), with TGI's parameter validation (422);
- ``FakeMLflow``: ``/invocations`` of ``mlflow models serve`` (``inputs`` / ``instances`` /
  ``dataframe_split`` / ``dataframe_records`` → ``{"predictions"}``), plus an ``MLmodel`` file and
  Open Inference Protocol metadata to read a signature from;
- ``FakeJsonModel``: a small custom TTS / translation / image server (JSON in, JSON or bytes out).

Every server keeps what it received in ``requests`` (path, JSON body).
"""

from __future__ import annotations

import asyncio
import base64
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from gateway_core.providers.mock_media import solid_png, tone_wav
from tests.fakes.loopback import serve_app

TGI_REPLY = ["Deep", " learning", " is", " a", " subset", " of", " machine", " learning", "."]
MLMODEL = b"""artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.sklearn
    python_version: 3.11.7
  sklearn:
    sklearn_version: 1.5.0
mlflow_version: 2.16.0
model_uuid: 5f1c
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 10]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}]'
  params: null
"""
V2_METADATA = {"name": "diabetes", "platform": "mlflow",
               "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 10]}],
               "outputs": [{"name": "output-0", "datatype": "FP64", "shape": [-1]}]}


@dataclass
class Received:
    path: str
    body: Any


@dataclass
class FakeServer:
    requests: list[Received] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        raise NotImplementedError

    async def start(self) -> Any:
        self.runner, self.port = await serve_app(self.app())
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def receive(self, request: web.Request) -> Any:
        body = orjson.loads(await request.read())
        self.requests.append(Received(request.path, body))
        return body


def tei_vector(text: str, dims: int = 4) -> list[float]:
    seed = zlib.crc32(text.encode())
    return [((seed >> (3 * i)) % 64) / 64.0 for i in range(dims)]


def tei_error(message: str, kind: str = "validation", status: int = 413) -> web.Response:
    return web.json_response({"error": message, "error_type": kind}, status=status)


@dataclass
class FakeTEI(FakeServer):
    labels: tuple[str, ...] = ("joy", "anger", "fear")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/embed", self.embed)
        app.router.add_post("/rerank", self.rerank)
        app.router.add_post("/predict", self.predict)
        return app

    async def embed(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        inputs = body["inputs"]
        if inputs in ("garbage", ["garbage"]):
            return web.Response(text="not json at all")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if any(len(t) > 200 for t in inputs) and not body.get("truncate"):
            return tei_error("Input validation error: `inputs` must have less than 512 tokens")
        return web.json_response([tei_vector(t) for t in inputs])

    async def rerank(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        query = set(body["query"].lower().split())
        ranks = [{"index": i, "score": len(query & set(t.lower().split())) / (len(query) or 1)}
                 for i, t in enumerate(body["texts"])]
        ranks.sort(key=lambda r: -float(r["score"]))
        if body.get("return_text"):
            for r in ranks:
                r["text"] = body["texts"][int(r["index"])]
        return web.json_response(ranks)

    def _labels(self, text: str) -> list[dict[str, Any]]:
        scores = [(zlib.crc32(f"{label}{text}".encode()) % 1000) + 1 for label in self.labels]
        total = sum(scores)
        out = [{"score": s / total, "label": label} for s, label in zip(scores, self.labels,
                                                                         strict=True)]
        return sorted(out, key=lambda p: -float(p["score"]))

    async def predict(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        inputs = body["inputs"]
        if isinstance(inputs, str):
            return web.json_response(self._labels(inputs))
        if isinstance(inputs, list) and inputs and isinstance(inputs[0], str):
            if len(inputs) > 2:
                return tei_error("invalid length 3, expected a string, a pair of strings [string,"
                                 " string] or a batch", status=422)
            return web.json_response(self._labels(" / ".join(inputs)))  # one sentence pair
        return web.json_response([self._labels(" / ".join(seq)) for seq in inputs])


@dataclass
class FakeTGI(FakeServer):
    token_delay: float = 0.0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/generate", self.generate)
        app.router.add_post("/generate_stream", self.generate_stream)
        return app

    @staticmethod
    def _validate(params: dict[str, Any]) -> str | None:
        t = params.get("temperature")
        if t is not None and t <= 0:
            return "Input validation error: `temperature` must be strictly positive"
        p = params.get("top_p")
        if p is not None and not 0 < p < 1:
            return "Input validation error: `top_p` must be > 0.0 and < 1.0"
        n = params.get("max_new_tokens")
        if n is not None and n < 1:
            return "Input validation error: `max_new_tokens` must be strictly positive"
        return None

    def _tokens(self, body: dict[str, Any]) -> tuple[list[str], str]:
        limit = body.get("parameters", {}).get("max_new_tokens")
        if body["inputs"] == "endless":
            return [f" t{i}" for i in range(100_000)], "length"
        if isinstance(limit, int) and limit < len(TGI_REPLY):
            return TGI_REPLY[:limit], "length"
        return TGI_REPLY, "eos_token"

    async def generate(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        if (err := self._validate(body.get("parameters") or {})) is not None:
            return tei_error(err, status=422)
        if body["inputs"] == "garbage":
            return web.json_response({"text": "no generated_text here"})
        tokens, reason = self._tokens(body)
        return web.json_response({"generated_text": "".join(tokens), "details": {
            "finish_reason": reason, "generated_tokens": len(tokens), "seed": None,
            "prefill": [], "tokens": [{"id": i, "text": t, "logprob": -0.5, "special": False}
                                      for i, t in enumerate(tokens)]}})

    @staticmethod
    def _top(body: dict[str, Any], i: int, text: str) -> list[dict[str, Any]] | None:
        n = (body.get("parameters") or {}).get("top_n_tokens")
        return [{"id": i, "text": text, "logprob": -0.5 - k, "special": False}
                for k in range(n)] if n else None

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await self.receive(request)
        if (err := self._validate(body.get("parameters") or {})) is not None:
            return tei_error(err, status=422)
        tokens, reason = self._tokens(body)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            last = len(tokens) - 1 if reason != "eos_token" else len(tokens)
            for i, text in enumerate(tokens):
                if self.token_delay or body["inputs"] == "endless":
                    await asyncio.sleep(self.token_delay or 0.01)
                if body["inputs"] == "mid-error" and i == 2:
                    await resp.write(b'data:{"error":"Request failed during generation: CUDA'
                                     b' OOM","error_type":"generation"}\n\n')
                    return resp
                if i == last:
                    break
                event = {"index": i + 1, "token": {"id": i, "text": text, "logprob": -0.5,
                                                   "special": False},
                         "top_tokens": self._top(body, i, text), "generated_text": None,
                         "details": None}
                await resp.write(b"data:" + orjson.dumps(event) + b"\n\n")
            # TGI's last event is the last token (the end-of-sequence token when the model
            # stopped by itself) with the whole text and the details.
            token = {"id": 2, "text": "</s>", "logprob": -0.1, "special": True} \
                if reason == "eos_token" else {"id": last, "text": tokens[last], "logprob": -0.5,
                                               "special": False}
            final = {"index": last + 1, "token": token, "generated_text": "".join(tokens),
                     "details": {"finish_reason": reason, "generated_tokens": last + 1,
                                 "seed": None, "input_length": 4}}
            await resp.write(b"data:" + orjson.dumps(final) + b"\n\n")
            await resp.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnected.set()
            raise
        return resp


@dataclass
class FakeMLflow(FakeServer):
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/invocations", self.invocations)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/artifacts/MLmodel", self.mlmodel)
        app.router.add_get("/v2/models/diabetes", self.metadata)
        return app

    async def ping(self, request: web.Request) -> web.Response:
        return web.Response(text="\n")

    async def mlmodel(self, request: web.Request) -> web.Response:
        return web.Response(body=MLMODEL, content_type="text/plain")

    async def metadata(self, request: web.Request) -> web.Response:
        return web.json_response(V2_METADATA)

    @staticmethod
    def _bad(message: str) -> web.Response:
        return web.json_response({"error_code": "BAD_REQUEST", "message": message}, status=400)

    async def invocations(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return self._bad("This predictor only supports the following content types: json")
        body = await self.receive(request)
        keys = [k for k in ("inputs", "instances", "dataframe_split", "dataframe_records")
                if k in body]
        if len(keys) != 1:
            return self._bad("The input must be a JSON dictionary with exactly one of the input"
                             " fields {'dataframe_split', 'dataframe_records', 'instances',"
                             " 'inputs'}")
        if keys[0] == "dataframe_split":
            rows = body["dataframe_split"]["data"]
        elif keys[0] == "dataframe_records":
            rows = [list(r.values()) for r in body["dataframe_records"]]
        else:
            rows = body[keys[0]]
            if isinstance(rows, dict):
                rows = next(iter(rows.values()))
        if rows == ["garbage"]:
            return web.Response(text="{not json")
        predictions = [sum(float(v) for v in row if isinstance(v, int | float))
                       if isinstance(row, list) else float(row) for row in rows]
        return web.json_response({"predictions": predictions})


@dataclass
class FakeJsonModel(FakeServer):
    """A custom JSON model server: TTS (base64 or raw WAV), translation (a HF pipeline's list),
    image (base64 PNG), and ``/garbage`` answering a body that is not JSON."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/tts", self.tts)
        app.router.add_post("/tts-raw", self.tts_raw)
        app.router.add_post("/translate", self.translate)
        app.router.add_post("/image", self.image)
        app.router.add_post("/garbage", self.garbage)
        return app

    async def tts(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        wav = tone_wav(f"{body['prompt']} {body.get('description', '')}")
        return web.json_response({"audio": base64.b64encode(wav).decode(), "sampling_rate": 16000})

    async def tts_raw(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        return web.Response(body=tone_wav(body["prompt"]), content_type="audio/wav")

    async def translate(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        return web.json_response([{"translation_text": f"{body['tgt_lang']}:{body['text']}"}])

    async def image(self, request: web.Request) -> web.Response:
        body = await self.receive(request)
        png = solid_png(body["prompt"], 8, 8)
        return web.json_response({"images": [base64.b64encode(png).decode()]})

    async def garbage(self, request: web.Request) -> web.Response:
        await self.receive(request)
        return web.Response(text="<html>oops</html>", content_type="text/html")
