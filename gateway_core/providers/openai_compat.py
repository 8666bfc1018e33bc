"""OpenAI-compatible upstreams: vLLM, TGI's Messages API, llama.cpp server, OpenAI itself.

Besides chat and completion: ``/embeddings`` (float or base64 vectors), ``/rerank`` (vLLM, Jina,
Cohere shape), ``/audio/transcriptions`` (multipart), ``/audio/speech`` (raw audio back) and
``/images/generations`` (base64, or a URL the provider downloads).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from gateway_common.structs import struct_to_dict
from gateway_core import audio
from gateway_core import openai_answers as answers
from gateway_core.errors import UpstreamError
from gateway_core.providers import openai_wire as wire
from gateway_core.providers import tasks_wire
from gateway_core.providers.base import Call, Provider, register
from gateway_core.providers.http import request_bytes, request_json, stream_sse_batches
from gateway_core.streams import ChatStreamState, CompletionStreamState
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIOptions:
    # Ask the upstream for usage in streams (`stream_options.include_usage`); turn off for servers
    # that reject the field.
    stream_usage: bool = True
    # How to ask for embedding vectors. base64 (the official SDK's default, so servers that work
    # with the SDK accept it) is a quarter of the size and needs no parsing of numbers; "float"
    # for servers that do not know the field.
    embedding_encoding: Literal["float", "base64"] = "base64"
    # `response_format` sent for images; null for servers that reject the field (gpt-image-1).
    image_response_format: str | None = "b64_json"
    # When an answer reports no usage, count its tokens with the server's own tokenizer instead
    # of the gateway's estimate: "vllm" (POST /tokenize, chat messages through the template),
    # "llama.cpp" (POST /tokenize), "llama-cpp-python" (POST /extras/tokenize); null: estimate.
    tokenizer: Literal["vllm", "llama.cpp", "llama-cpp-python"] | None = None
    # Stream non-streaming chat and completion requests from the upstream and assemble the
    # answer, so that stage timeouts, retries before the first token and a caller that leaves
    # work for them as for streams; off for servers whose streams lack what their answers have.
    unary_via_stream: bool = True


@register("openai")
class OpenAIProvider(Provider):
    """Calls ``{upstream_url}/chat/completions`` and friends; ``upstream_url`` ends in ``/v1``."""

    Options = OpenAIOptions
    options: OpenAIOptions

    @property
    def unary_via_stream(self) -> bool:
        return self.options.unary_via_stream

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        url = self.url("chat/completions")
        body = wire.chat_body(req, self.upstream_model, self.model.defaults, stream=False)
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)
        # The prompt is counted only when the upstream reports no usage (~0.1 ms per KB).
        return answers.parse_chat_response(data, req.model, lambda: wire.prompt_tokens_of(req.messages))

    async def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        url = self.url("chat/completions")
        body = wire.chat_body(req, self.upstream_model, self.model.defaults, stream=True,
                              stream_usage=self.options.stream_usage)
        state = ChatStreamState(req.model, lambda: wire.prompt_tokens_of(req.messages))
        counting = self.options.tokenizer is not None
        texts: list[str] = []
        # Events that arrived in one read go on as one message: no waiting, fewer gRPC messages.
        async for batch in stream_sse_batches(self.sessions.get(url), url, call, body,
                                              api_key=self.api_key):
            for chunk in state.feed_batch(batch):
                if counting:
                    texts.extend(c.delta.content for c in chunk.choices if c.delta.content)
                yield chunk
        if counting and state.usage is None:
            last = state.final()
            texts.extend(c.delta.content for c in last.choices if c.delta.content)
            usage = await self._counted(body["messages"], "".join(texts), call)
            if usage is not None:
                last.usage.CopyFrom(usage)
            yield last
            return
        yield state.final()

    async def _counted(self, messages: Any, completion: str, call: Call) -> pb.Usage | None:
        """The usage counted by the upstream's tokenizer (``options.tokenizer``); None when it
        cannot say (the estimate stands, marked so)."""
        origin = "/".join(self.url("").split("/", 3)[:3])
        kind = self.options.tokenizer
        path = "/extras/tokenize" if kind == "llama-cpp-python" else "/tokenize"
        url = origin + path

        def body(text: str | None) -> dict[str, Any]:
            if kind == "vllm":
                return ({"model": self.upstream_model, "messages": messages} if text is None
                        else {"model": self.upstream_model, "prompt": text,
                              "add_special_tokens": False})
            content = text if text is not None else "\n".join(
                str(m.get("content") or "") for m in messages)
            return {"input": content} if kind == "llama-cpp-python" else {"content": content}

        try:
            counts = []
            for text in (None, completion):
                data = await request_json(self.sessions.get(url), "POST", url, call,
                                          json_body=body(text), api_key=self.api_key)
                n = data.get("count") if isinstance(data, dict) else None
                if n is None:
                    n = len(data.get("tokens") or ()) if isinstance(data, dict) else len(data)
                counts.append(int(n))
        except (UpstreamError, ValueError, TypeError, AttributeError) as exc:
            log.info("model %s: counting tokens with the upstream's tokenizer failed: %s",
                     self.model.id, getattr(exc, "message", exc))
            return None
        prompt, completion_tokens = counts
        return pb.Usage(prompt_tokens=prompt, completion_tokens=completion_tokens,
                        total_tokens=prompt + completion_tokens)

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        url = self.url("completions")
        body = wire.completion_body(req, self.upstream_model, self.model.defaults, stream=False)
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)
        return answers.parse_completion_response(data, req.model, lambda: estimate_tokens(req.prompt))

    async def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        url = self.url("completions")
        body = wire.completion_body(req, self.upstream_model, self.model.defaults, stream=True,
                                    stream_usage=self.options.stream_usage)
        state = CompletionStreamState(req.model, lambda: estimate_tokens(req.prompt))
        # Events that arrived in one read go on as one message: no waiting, fewer gRPC messages.
        async for batch in stream_sse_batches(self.sessions.get(url), url, call, body,
                                              api_key=self.api_key):
            for chunk in state.feed_batch(batch):
                yield chunk
        yield state.final()

    async def embed(self, req: pb.EmbedRequest, call: Call) -> pb.EmbedResponse:
        url = self.url("embeddings")
        body: dict[str, Any] = {"model": self.upstream_model, "input": list(req.inputs),
                                "encoding_format": self.options.embedding_encoding}
        if req.HasField("dimensions"):
            body["dimensions"] = req.dimensions
        if req.end_user:
            body["user"] = req.end_user
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)
        resp = tasks_wire.openai_embeddings(data, req.model, len(req.inputs))
        if not resp.usage.prompt_tokens:
            tokens = sum(estimate_tokens(t) for t in req.inputs)
            resp.usage.CopyFrom(pb.Usage(prompt_tokens=tokens, total_tokens=tokens,
                                         estimated=True))
        return resp

    async def rerank(self, req: pb.RerankRequest, call: Call) -> pb.RerankResponse:
        url = self.url("rerank")
        body: dict[str, Any] = {"model": self.upstream_model, "query": req.query,
                                "documents": list(req.texts)}
        if req.HasField("top_n"):
            body["top_n"] = req.top_n
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)
        return tasks_wire.openai_rerank(data, req)

    async def transcribe(self, req: pb.TranscribeRequest, data: bytes, call: Call
                         ) -> pb.TranscribeResponse:
        url = self.url("audio/transcriptions")
        form = aiohttp.FormData()
        form.add_field("model", self.upstream_model)
        for name in ("language", "prompt"):
            if value := getattr(req, name):
                form.add_field(name, value)
        if req.HasField("temperature"):
            form.add_field("temperature", f"{req.temperature:g}")
        form.add_field("response_format", "json")
        ext = audio.EXTENSION_OF.get(req.mime_type, "bin")
        form.add_field("file", data, content_type=req.mime_type or None,
                       filename=req.filename or f"audio.{ext}")
        answer = await request_json(self.sessions.get(url), "POST", url, call, data=form,
                                    api_key=self.api_key, headers={"Accept": "application/json"})
        return tasks_wire.transcription(answer, req.model)

    async def speech(self, req: pb.SpeechRequest, call: Call) -> pb.SpeechResponse:
        url = self.url("audio/speech")
        fmt = req.response_format or "mp3"
        body: dict[str, Any] = {"model": self.upstream_model, "input": req.input,
                                "voice": req.voice or "alloy", "response_format": fmt}
        if req.HasField("speed"):
            body["speed"] = round(req.speed, 4)
        if req.instructions:
            body["instructions"] = req.instructions
        if req.HasField("params"):
            body.update(struct_to_dict(req.params))
        data = await request_bytes(
            self.sessions.get(url), "POST", url, call, json_body=body, api_key=self.api_key,
            headers={"Content-Type": "application/json", "Accept": "application/octet-stream"})
        if not data:
            raise UpstreamError("upstream answered speech with no audio", kind="protocol")
        return pb.SpeechResponse(audio=data,
                                 mime_type=tasks_wire.SPEECH_MIME.get(fmt, "audio/mpeg"))

    async def image(self, req: pb.ImageRequest, call: Call) -> pb.ImageResponse:
        url = self.url("images/generations")
        body: dict[str, Any] = {"model": self.upstream_model, "prompt": req.prompt}
        if req.HasField("n"):
            body["n"] = req.n
        if req.size:
            body["size"] = req.size
        if self.options.image_response_format:
            body["response_format"] = self.options.image_response_format
        if req.HasField("params"):
            body.update(struct_to_dict(req.params))
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)
        resp = pb.ImageResponse()
        with tasks_wire.reading("images"):
            resp.created = int(data.get("created") or time.time())
            items = data["data"]
            if not isinstance(items, list) or not items:
                raise ValueError("no images")
        for item in items:
            with tasks_wire.reading("images"):
                link = item.get("url") if not item.get("b64_json") else None
                revised = str(item.get("revised_prompt") or "")
            if link:
                raw = await request_bytes(self.sessions.get(link), "GET", link, call,
                                          headers={"Accept": "image/*"})
            else:
                with tasks_wire.reading("images"):
                    raw = tasks_wire.b64_bytes(item["b64_json"])
            with tasks_wire.reading("an image"):
                mime = tasks_wire.image_mime(raw)
            resp.images.add(data=raw, mime_type=mime, revised_prompt=revised)
        return resp
