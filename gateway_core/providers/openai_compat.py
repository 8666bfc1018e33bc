"""OpenAI-compatible upstreams: vLLM, TGI's Messages API, llama.cpp server, OpenAI itself."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway_core.providers import openai_wire as wire
from gateway_core.providers.base import Call, Provider, register
from gateway_core.providers.http import request_json, stream_sse
from gateway_core.streams import ChatStreamState, CompletionStreamState
from gateway_core.tokens import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class OpenAIOptions:
    # Ask the upstream for usage in streams (`stream_options.include_usage`); turn off for servers
    # that reject the field.
    stream_usage: bool = True


@register("openai")
class OpenAIProvider(Provider):
    """Calls ``{upstream_url}/chat/completions`` and friends; ``upstream_url`` ends in ``/v1``."""

    Options = OpenAIOptions
    options: OpenAIOptions

    def _url(self, path: str) -> str:
        return f"{(self.model.upstream_url or '').rstrip('/')}/{path}"

    @property
    def _api_key(self) -> str | None:
        env = self.model.api_key_env
        return os.environ.get(env) if env else None

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        url = self._url("chat/completions")
        body = wire.chat_body(req, self.upstream_model, self.model.defaults, stream=False)
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self._api_key)
        return wire.parse_chat_response(data, req.model, wire.prompt_tokens_of(req.messages))

    async def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        url = self._url("chat/completions")
        body = wire.chat_body(req, self.upstream_model, self.model.defaults, stream=True,
                              stream_usage=self.options.stream_usage)
        state = ChatStreamState(req.model, wire.prompt_tokens_of(req.messages))
        async for data in stream_sse(self.sessions.get(url), url, call, body,
                                     api_key=self._api_key):
            chunk = state.feed(data)
            if chunk is not None:
                yield chunk
        yield state.final()

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        url = self._url("completions")
        body = wire.completion_body(req, self.upstream_model, self.model.defaults, stream=False)
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self._api_key)
        return wire.parse_completion_response(data, req.model, estimate_tokens(req.prompt))

    async def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        url = self._url("completions")
        body = wire.completion_body(req, self.upstream_model, self.model.defaults, stream=True,
                                    stream_usage=self.options.stream_usage)
        state = CompletionStreamState(req.model, estimate_tokens(req.prompt))
        async for data in stream_sse(self.sessions.get(url), url, call, body,
                                     api_key=self._api_key):
            chunk = state.feed(data)
            if chunk is not None:
                yield chunk
        yield state.final()
