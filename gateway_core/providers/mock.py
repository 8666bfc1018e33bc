"""The built-in ``mock`` provider: deterministic answers with no model server.

It lets a new user try every route at once and serves the benchmarks. Text answers echo the last
user message in a fixed frame, one word per token, streamed with a configurable delay per token.
A chat request that offers tools gets a tool call when its last user message names a function (or
``tool_choice`` requires one): one call per named function, with arguments made from each
function's JSON schema, streamed as OpenAI's fragments (see ``mock_tools``). With ``logprobs`` each
word comes with a made-up log-probability.
The other tasks answer shape-correct, deterministic outputs: unit vectors from the text's hash,
rerank scores from word overlap, label scores from a hash, a WAV tone, a solid-colour PNG, a tagged
translation, and a weighted row sum checked against an MLflow signature (see ``mock_media``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

from gateway_common.config import ConfigError, ModelConfig
from gateway_core import predict_schema, speech_fields
from gateway_core.errors import InvalidRequest
from gateway_core.providers import mock_media as media
from gateway_core.providers import mock_tools, tasks_wire
from gateway_core.providers import openai_wire as wire
from gateway_core.providers.base import Call, Provider, SessionPool, register
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class MockOptions:
    # Seconds between streamed tokens (and per token of a unary answer).
    token_delay_seconds: float = 0.0
    # A fixed reply instead of the echo.
    reply: str | None = None
    # Longest reply in tokens when the request sets no max_tokens.
    max_tokens: int = 64
    # Length of embedding vectors (a request may ask for fewer with `dimensions`).
    embedding_dimensions: int = 384
    # The classifier's labels.
    labels: list[str] = field(default_factory=lambda: ["positive", "neutral", "negative"])
    # The text-to-speech model's fields (what generate-speech/schema answers).
    speech_fields: list[dict[str, Any]] = field(
        default_factory=lambda: list(speech_fields.DEFAULT_FIELDS))
    # The classical-ML model's MLflow signature; the default takes rows of numbers.
    signature: dict[str, Any] = field(default_factory=lambda: {
        "inputs": [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, -1]}}],
        "outputs": [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1]}}],
    })
    # Target language of translations when the request names none.
    target_language: str = "fr"


def _pieces(words: list[str]) -> list[str]:
    """The streamed pieces of a reply: each word after the first with its leading space."""
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


@register("mock")
class MockProvider(Provider):
    Options = MockOptions
    options: MockOptions

    def __init__(self, model: ModelConfig, options: MockOptions, sessions: SessionPool) -> None:
        super().__init__(model, options, sessions)
        try:
            self.fields = speech_fields.parse_fields(options.speech_fields, "speech_fields")
            self.signature = predict_schema.parse_signature(options.signature)
        except ValueError as exc:
            raise ConfigError(f"models.{model.id}.options", str(exc)) from None
        if not options.labels:
            raise ConfigError(f"models.{model.id}.options.labels", "must name at least one label")

    def _words(self, prompt: str, max_tokens: int | None) -> tuple[list[str], str]:
        text = self.options.reply
        if text is None:
            text = f"This is a mock reply to: {' '.join(prompt.split()[:48])}"
        words = text.split(" ")
        limit = max_tokens if max_tokens is not None else self.options.max_tokens
        if len(words) > limit:
            return words[:limit], "length"
        return words, "stop"

    @staticmethod
    def _last_user(req: pb.ChatRequest) -> str:
        for m in reversed(req.messages):  # a tool's result, after the model called it
            if m.role in ("user", "tool"):
                return m.content if not m.parts else " ".join(p.text for p in m.parts)
        return ""

    @staticmethod
    def _max_tokens(params: pb.SamplingParams) -> int | None:
        return wire.max_tokens_of(params)

    async def _pace(self, tokens: int) -> None:
        if self.options.token_delay_seconds and tokens:
            await asyncio.sleep(self.options.token_delay_seconds * tokens)

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        prompt_tokens = wire.prompt_tokens_of(req.messages)
        resp = pb.ChatResponse(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()),
                               model=req.model)
        calls = mock_tools.calls_for(req)
        if calls:
            await self._pace(sum(len(c.function.arguments) for c in calls) // 4)
            choice = resp.choices.add(index=0, finish_reason="tool_calls")
            choice.message.role = "assistant"
            choice.message.tool_calls.extend(calls)
            completion = sum(estimate_tokens(c.function.arguments) + 1 for c in calls)
        else:
            words, reason = self._words(self._last_user(req), self._max_tokens(req.params))
            await self._pace(len(words))
            choice = resp.choices.add(index=0, finish_reason=reason)
            choice.message.role = "assistant"
            choice.message.content = " ".join(words)
            if req.logprobs:
                choice.logprobs.content.extend(mock_tools.logprobs(
                    _pieces(words), req.top_logprobs if req.HasField("top_logprobs") else 0))
            completion = len(words)
        resp.usage.CopyFrom(pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                                     total_tokens=prompt_tokens + completion))
        return resp

    async def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        delay = self.options.token_delay_seconds
        calls = mock_tools.calls_for(req)
        prompt_tokens = wire.prompt_tokens_of(req.messages)
        if calls:
            fragments = mock_tools.fragments(calls)
            for i, fragment in enumerate(fragments):
                if delay:
                    await asyncio.sleep(delay)
                chunk = pb.ChatChunk(id=cid, created=created, model=req.model)
                delta = chunk.choices.add(index=0).delta
                delta.role = "assistant" if i == 0 else ""
                delta.tool_calls.append(fragment)
                yield chunk
            yield pb.ChatChunk(
                id=cid, created=created, model=req.model,
                choices=[pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(),
                                            finish_reason="tool_calls")],
                usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(fragments),
                               total_tokens=prompt_tokens + len(fragments)))
            return
        words, reason = self._words(self._last_user(req), self._max_tokens(req.params))
        top = req.top_logprobs if req.HasField("top_logprobs") else 0
        for i, piece in enumerate(_pieces(words)):
            if delay:
                await asyncio.sleep(delay)
            chunk = pb.ChatChunk(id=cid, created=created, model=req.model, choices=[
                pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(
                    role="assistant" if i == 0 else "", content=piece))
            ])
            if req.logprobs:
                chunk.choices[0].logprobs.content.extend(mock_tools.logprobs([piece], top))
            else:
                chunk.shape = pb.ChatChunk.SHAPE_TEXT
            yield chunk
        yield pb.ChatChunk(
            id=cid, created=created, model=req.model,
            choices=[pb.ChatChunkChoice(index=0, delta=pb.ChatDelta(), finish_reason=reason)],
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words),
                           total_tokens=prompt_tokens + len(words)),
        )

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        words, reason = self._words(req.prompt, self._max_tokens(req.params))
        await self._pace(len(words))
        prompt_tokens = estimate_tokens(req.prompt)
        text = (req.prompt if req.echo else "") + " ".join(words)
        resp = pb.CompletionResponse(
            id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[pb.CompletionChoice(index=0, text=text, finish_reason=reason)],
            usage=pb.Usage(prompt_tokens=prompt_tokens, completion_tokens=len(words),
                           total_tokens=prompt_tokens + len(words)),
        )
        if req.HasField("logprobs"):
            resp.choices[0].logprobs.tokens.extend(mock_tools.logprobs(_pieces(words),
                                                                       req.logprobs))
        return resp

    async def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        words, reason = self._words(req.prompt, self._max_tokens(req.params))
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        delay = self.options.token_delay_seconds
        pieces = _pieces(words)
        # The last piece goes out with the finish reason (one message per token, as vLLM does).
        for i, piece in enumerate(pieces):
            if delay:
                await asyncio.sleep(delay)
            chunk = pb.CompletionChunk(id=cid, created=created, model=req.model, choices=[
                pb.CompletionChoice(index=0, text=piece)])
            if req.HasField("logprobs"):
                chunk.choices[0].logprobs.tokens.extend(mock_tools.logprobs([piece],
                                                                            req.logprobs))
            if i < len(pieces) - 1:
                yield chunk
                continue
            prompt_tokens = estimate_tokens(req.prompt)
            chunk.choices[0].finish_reason = reason
            chunk.usage.CopyFrom(pb.Usage(prompt_tokens=prompt_tokens,
                                          completion_tokens=len(words),
                                          total_tokens=prompt_tokens + len(words)))
            yield chunk

    async def embed(self, req: pb.EmbedRequest, call: Call) -> pb.EmbedResponse:
        dims = self.options.embedding_dimensions
        if req.HasField("dimensions"):
            if not 0 < req.dimensions <= dims:
                raise InvalidRequest(f"'dimensions' must be between 1 and {dims} for this model")
            dims = req.dimensions
        resp = tasks_wire.embed_response(
            req.model, [tasks_wire.packed_vector(media.hash_vector(t, dims)) for t in req.inputs])
        tokens = sum(estimate_tokens(t) for t in req.inputs)
        resp.usage.prompt_tokens = resp.usage.total_tokens = tokens
        return resp

    async def rerank(self, req: pb.RerankRequest, call: Call) -> pb.RerankResponse:
        results = [
            pb.RerankResult(index=i, score=media.overlap_score(req.query, text),
                            text=text if req.return_text else "")
            for i, text in enumerate(req.texts)
        ]
        results.sort(key=lambda r: (-r.score, r.index))
        if req.HasField("top_n"):
            results = results[: req.top_n]
        tokens = estimate_tokens(req.query) + sum(estimate_tokens(t) for t in req.texts)
        return pb.RerankResponse(model=req.model, results=results,
                                 usage=pb.Usage(prompt_tokens=tokens, total_tokens=tokens))

    async def classify(self, req: pb.ClassifyRequest, call: Call) -> pb.ClassifyResponse:
        labels = self.options.labels
        resp = pb.ClassifyResponse(model=req.model)
        for text in req.inputs:
            scores = media.softmax([4 * media.unit_score(label, text) for label in labels])
            ranked = sorted(zip(labels, scores, strict=True), key=lambda p: -p[1])
            if req.HasField("top_k"):
                ranked = ranked[: req.top_k]
            resp.results.add().labels.extend(
                pb.LabelScore(label=label, score=score) for label, score in ranked)
        return resp

    async def transcribe(self, req: pb.TranscribeRequest, data: bytes, call: Call
                         ) -> pb.TranscribeResponse:
        seconds = media.wav_seconds(data)
        resp = pb.TranscribeResponse(model=req.model, language=req.language or "en")
        if seconds is not None:
            resp.text = f"This is a mock transcription of {seconds:.2f} seconds of audio."
            resp.duration = seconds
        else:
            resp.text = (f"This is a mock transcription of {len(data)} bytes of"
                         f" {req.mime_type or 'audio'}.")
        return resp

    async def speech_schema(self, req: pb.SpeechSchemaRequest, call: Call) -> pb.SpeechSchema:
        return pb.SpeechSchema(model=req.model, fields=self.fields)

    async def speech(self, req: pb.SpeechRequest, call: Call) -> pb.SpeechResponse:
        values = speech_fields.speech_values(req, self.fields)
        text = " ".join(str(v) for v in values.values())
        fmt = req.response_format or "wav"
        wav = media.tone_wav(text)
        if fmt == "wav":
            return pb.SpeechResponse(audio=wav, mime_type="audio/wav")
        if fmt == "pcm":
            return pb.SpeechResponse(audio=wav[44:], mime_type="audio/pcm")
        raise InvalidRequest(f"the mock speech model answers 'wav' or 'pcm', not {fmt[:20]!r}")

    async def image(self, req: pb.ImageRequest, call: Call) -> pb.ImageResponse:
        size = media.parse_size(req.size)
        if size is None:
            raise InvalidRequest(f"'size' must look like 512x512; got {req.size[:20]!r}")
        n = req.n if req.HasField("n") else 1
        if not 1 <= n <= 4:
            raise InvalidRequest("'n' must be between 1 and 4 for the mock image model")
        return pb.ImageResponse(created=int(time.time()), images=[
            pb.Image(data=media.solid_png(f"{req.prompt}#{i}", *size), mime_type="image/png",
                     revised_prompt=req.prompt)
            for i in range(n)
        ])

    async def translate(self, req: pb.TranslateRequest, call: Call) -> pb.TranslateResponse:
        source = req.source_language or "en"
        target = req.target_language or self.options.target_language
        return pb.TranslateResponse(model=req.model, text=f"[{source}->{target}] {req.text}",
                                    source_language=source, target_language=target)

    async def predict(self, req: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        body = predict_schema.check_input(req, self.signature)
        predictions: list[Any] = []
        for row in predict_schema.rows_of(body):
            values = row if isinstance(row, list) else [row]
            numbers = [float(v) for v in values if isinstance(v, int | float)]
            predictions.append(sum(v * (1 + 0.5 * i) for i, v in enumerate(numbers)))
        outputs = struct_pb2.Value()
        outputs.list_value.extend(predictions)
        return pb.PredictResponse(model=req.model, outputs=outputs,
                                  input_schema=self.signature.inputs,
                                  output_schema=self.signature.outputs)
