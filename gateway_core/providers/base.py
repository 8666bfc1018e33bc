"""The provider interface: how the core calls one kind of upstream model server.

A provider is built once per configured model at start-up with an injected, shared HTTP session
(one per upstream host). Each task is one coroutine (or an async iterator for streams) taking the
typed request and a ``Call`` that carries the deadline and the request id. A provider that does not
serve a task simply does not override its method: the default raises ``Unsupported``.

Adding an upstream kind is one module with a ``Provider`` subclass and one ``@register`` line.
Providers never import grpc: they raise ``gateway_core.errors`` exceptions.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import aiohttp

from gateway_common.budget import BUFFER_COST_FACTOR, ByteBudget
from gateway_common.config import ModelConfig, load_dataclass
from gateway_core.errors import Overloaded, Unsupported, UpstreamTimeout
from inference_gateway.v1 import inference_pb2 as pb


@dataclass(slots=True)
class Call:
    """Per-request facts a provider needs: when the caller gives up, and who the request is."""

    deadline: float  # loop.time() at which the caller gives up
    request_id: str = ""
    # Seconds spent waiting on the upstream, summed by providers (reported as a trailer).
    upstream_seconds: float = 0.0
    # The largest upstream answer read whole (the model's max_response_bytes).
    max_response_bytes: int = 64 * 1024 * 1024
    # The process-wide budget of buffered answers (None: unbounded), and this call's share.
    budget: ByteBudget | None = None
    held: int = 0
    # Stage timeouts in seconds (None: only the deadline bounds the stage): opening the
    # connection, and the upstream's response headers after the request was sent.
    connect_timeout: float | None = None
    headers_timeout: float | None = None
    # The W3C traceparent of the current attempt's span (tracing on), sent to the upstream.
    traceparent: str | None = None

    def hold(self, nbytes: int) -> None:
        """Count ``nbytes`` of an upstream answer against the budget until ``release``; raises
        Overloaded (503, Retry-After) when they do not fit."""
        if self.budget is None or nbytes <= 0:
            return
        cost = nbytes * BUFFER_COST_FACTOR
        if not self.budget.try_take(cost):
            raise Overloaded("the gateway is buffering as many upstream answers as its memory "
                             "budget allows; retry shortly")
        self.held += cost

    def release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.give_back(self.held)
            self.held = 0

    def remaining(self) -> float:
        """Seconds left before the deadline; raises UpstreamTimeout when none are."""
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise UpstreamTimeout("the request deadline passed before the upstream answered")
        return left

    def client_timeout(self) -> aiohttp.ClientTimeout:
        """An aiohttp timeout that ends the upstream call when the deadline passes (and its
        connection attempt after ``connect_timeout``)."""
        total = self.remaining()
        connect = self.connect_timeout
        return aiohttp.ClientTimeout(
            total=total, sock_connect=min(connect, total) if connect is not None else None)

    def headers_within(self) -> float | None:
        """Seconds the upstream has for its response headers, when a stage timeout is shorter
        than the time left (None: the deadline bounds it)."""
        if self.headers_timeout is None:
            return None
        left = self.remaining()
        return self.headers_timeout if self.headers_timeout < left else None


class SessionPool:
    """One shared aiohttp session per upstream origin, created lazily and closed at shutdown.

    A session serves every caller of its upstream, so it keeps no cookies: one caller's
    ``Set-Cookie`` (a sticky session, a login) would otherwise be sent with everyone's requests.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def get(self, base_url: str) -> aiohttp.ClientSession:
        origin = base_url.split("/", 3)[:3]
        key = "/".join(origin)
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[key] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


@dataclass(frozen=True)
class NoOptions:
    """For providers that take no options."""


class Provider:
    """Base of every provider. Override the methods of the tasks the upstream serves."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[Any]] = NoOptions

    def __init__(self, model: ModelConfig, options: Any, sessions: SessionPool) -> None:
        self.model = model
        self.options = options
        self.sessions = sessions
        self.created = int(time.time())

    @property
    def upstream_model(self) -> str:
        return self.model.upstream_model or self.model.id

    def url(self, path: str) -> str:
        """``path`` under the model's ``upstream_url``."""
        return f"{(self.model.upstream_url or '').rstrip('/')}/{path}"

    @functools.cached_property
    def api_key(self) -> str | None:
        """The upstream credential, from the environment variable the config names (read at the
        first call, not on every one)."""
        env = self.model.api_key_env
        return os.environ.get(env) if env else None

    @property
    def unary_via_stream(self) -> bool:
        """Whether non-streaming chat and completion requests are better streamed from this
        upstream and assembled by the gateway (see ``gateway_core.traffic.assemble``)."""
        return False

    async def start(self) -> None:
        """Called once after construction, inside the running loop (fetch a schema, etc.)."""

    async def close(self) -> None:
        """Called once at shutdown."""

    def _unsupported(self, what: str) -> Unsupported:
        return Unsupported(f"provider {self.name!r} of model {self.model.id!r} does not serve {what}")

    async def chat(self, req: pb.ChatRequest, call: Call) -> pb.ChatResponse:
        raise self._unsupported("chat")

    def chat_stream(self, req: pb.ChatRequest, call: Call) -> AsyncIterator[pb.ChatChunk]:
        raise self._unsupported("streaming chat")

    async def complete(self, req: pb.CompletionRequest, call: Call) -> pb.CompletionResponse:
        raise self._unsupported("completion")

    def complete_stream(
        self, req: pb.CompletionRequest, call: Call
    ) -> AsyncIterator[pb.CompletionChunk]:
        raise self._unsupported("streaming completion")

    async def embed(self, req: pb.EmbedRequest, call: Call) -> pb.EmbedResponse:
        raise self._unsupported("embedding")

    async def rerank(self, req: pb.RerankRequest, call: Call) -> pb.RerankResponse:
        raise self._unsupported("rerank")

    async def classify(self, req: pb.ClassifyRequest, call: Call) -> pb.ClassifyResponse:
        raise self._unsupported("classification")

    async def transcribe(self, req: pb.TranscribeRequest, data: bytes, call: Call
                         ) -> pb.TranscribeResponse:
        """``data`` is the checked audio (read out of ``req`` once: upb copies a bytes field on
        every read); ``req.audio`` may be empty."""
        raise self._unsupported("transcription")

    async def speech_schema(self, req: pb.SpeechSchemaRequest, call: Call) -> pb.SpeechSchema:
        raise self._unsupported("speech schema")

    async def speech(self, req: pb.SpeechRequest, call: Call) -> pb.SpeechResponse:
        raise self._unsupported("speech")

    async def image(self, req: pb.ImageRequest, call: Call) -> pb.ImageResponse:
        raise self._unsupported("image generation")

    async def translate(self, req: pb.TranslateRequest, call: Call) -> pb.TranslateResponse:
        raise self._unsupported("translation")

    async def predict(self, req: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        raise self._unsupported("predict")


_REGISTRY: dict[str, type[Provider]] = {}

P = TypeVar("P", bound=type[Provider])


def register(name: str) -> Callable[[P], P]:
    """Class decorator: make a provider available under ``provider: <name>`` in config."""

    def deco(cls: P) -> P:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def provider_names() -> list[str]:
    from gateway_core import providers  # noqa: F401  (registers the built-in providers)

    return sorted(_REGISTRY)


def provider_class(name: str) -> type[Provider] | None:
    from gateway_core import providers  # noqa: F401

    return _REGISTRY.get(name)


def build_options(cls: type[Provider], model: ModelConfig, path: str) -> Any:
    """Validate a model's ``options`` against its provider's options class (raises ConfigError)."""
    return load_dataclass(cls.Options, model.options, f"{path}.options")
