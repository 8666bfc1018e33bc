"""Server interceptors: one concern each, their order set in ``server.py``.

grpc.aio interceptors see the method name and metadata, not the request, so each one here wraps the
method's behaviour (the coroutine or async generator that serves it). Wrapped handlers are built
once per method and cached: no per-request allocation beyond the call itself.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any, NoReturn

import grpc
from grpc import aio
from prometheus_client import Counter, Histogram, disable_created_metrics

from gateway_common.asyncgen import delegate
from gateway_common.core_api import MODEL_KEY, REASON_KEY
from gateway_common.metrics import child
from gateway_core import access_interceptor as access
from gateway_core.errors import GatewayError, UpstreamError

log = logging.getLogger(__name__)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: half the exposition, no value

# The resolved model id of the current call (bounded: only configured ids are set), for labels.
current_model: ContextVar[str] = ContextVar("current_model", default="")
# The caller's request id, for logs.
current_request_id: ContextVar[str] = ContextVar("current_request_id", default="")

# A server-stream behaviour's attribute: (the behaviour itself, the function that returns its
# messages directly), set by ``BehaviorInterceptor`` on the async generator function grpc.aio
# needs (which only iterates that function and yields again). The behaviour is named so that a
# wrapper copying the attribute (``functools.wraps``) is not taken for what it wraps.
_DIRECT_STREAM = "_igw_direct_stream"

UnaryBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]

GRPC_REQUESTS = Counter(
    "gateway_grpc_requests_total", "RPCs served by the core, by method, model and status code.",
    ["method", "model", "code"],
)
GRPC_DURATION = Histogram(
    "gateway_grpc_request_duration_seconds", "Time the core spent on an RPC, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total", "Upstream failures by model and kind.", ["model", "kind"],
)


def direct_stream(behavior: Any) -> Any:
    """The function giving a stream behaviour's messages without the async generator layer that
    grpc.aio needs, when ``behavior`` is such a layer (one layer less per message)."""
    declared = getattr(behavior, _DIRECT_STREAM, None)
    if declared is not None and declared[0] is behavior:
        return declared[1]
    return behavior


class BehaviorInterceptor(aio.ServerInterceptor):
    """Base: wraps unary and server-streaming behaviours of every method it is given."""

    def __init__(self) -> None:
        self._cache: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def applies_to(self, method: str) -> bool:
        """Our own services only: health and reflection are served as they are."""
        return method.startswith("/inference_gateway.")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None:
            return cached
        handler = await continuation(handler_call_details)
        if handler is None or not self.applies_to(method):
            return handler
        wrapped = self._wrap(method, handler)
        self._cache[method] = wrapped
        return wrapped

    def _wrap(self, method: str, h: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        name = method.rsplit("/", 1)[-1]
        if h.unary_unary is not None:
            inner_u: UnaryBehavior = h.unary_unary  # type: ignore[assignment]

            async def unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                return await self.around_unary(name, inner_u, request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary, h.request_deserializer, h.response_serializer)
        if h.unary_stream is not None and inspect.isasyncgenfunction(h.unary_stream):
            # The next interceptor's stream as it is, not through its grpc.aio wrapper.
            inner_s: StreamBehavior = direct_stream(h.unary_stream)
            direct = functools.partial(self.around_stream, name, inner_s)

            # grpc.aio asks for an async generator function here, not a function returning one:
            # this layer is for grpc.aio's server only. Whoever composes behaviours takes
            # ``direct`` (``direct_stream``): one async generator layer less per message.
            async def stream(
                request: Any, context: aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async for item in direct(request, context):
                    yield item

            setattr(stream, _DIRECT_STREAM, (stream, direct))
            return grpc.unary_stream_rpc_method_handler(
                stream, h.request_deserializer, h.response_serializer)
        if h.stream_unary is not None:
            inner_cu: UnaryBehavior = h.stream_unary  # type: ignore[assignment]

            async def client_stream(requests: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                return await self.around_unary(name, inner_cu, requests, context)

            return grpc.stream_unary_rpc_method_handler(
                client_stream, h.request_deserializer, h.response_serializer)
        return h  # bidirectional streams: none in our API

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> Any:
        return await behavior(request, context)

    def around_stream(
        self, method: str, behavior: StreamBehavior, request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        return behavior(request, context)


def _trailers(error: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The error's trailers (its reason, an upstream's error fields), and the model the request
    resolved to (when it got that far)."""
    model = current_model.get()
    return (*error, (MODEL_KEY, model)) if model else error


async def _abort(context: aio.ServicerContext[Any, Any], exc: BaseException) -> NoReturn:
    if isinstance(exc, GatewayError):
        if isinstance(exc, UpstreamError):
            UPSTREAM_ERRORS.labels(current_model.get() or "unknown", exc.kind).inc()
        await context.abort(grpc.StatusCode[exc.code], exc.message,
                            trailing_metadata=_trailers(exc.trailers()))
    log.error("unhandled error in RPC (request id %s)", current_request_id.get() or "-",
              exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in the gateway (request id {current_request_id.get() or '-'})",
        trailing_metadata=_trailers(((REASON_KEY, "internal"),)),
    )
    raise AssertionError("abort returned")  # pragma: no cover


class ErrorInterceptor(BehaviorInterceptor):
    """Turns GatewayError into an aborted RPC with its status and reason; anything else into
    INTERNAL with a generic message (the detail goes to the log, never to the caller)."""

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> Any:
        try:
            return await behavior(request, context)
        except (asyncio.CancelledError, aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc)

    async def around_stream(
        self, method: str, behavior: StreamBehavior, request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        try:
            async with delegate(behavior(request, context)) as items:
                async for item in items:
                    yield item
        except (asyncio.CancelledError, aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, exc)


def _code_of(context: aio.ServicerContext[Any, Any], exc: BaseException | None) -> str:
    if exc is None:
        return "OK"
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    name: str = getattr(context.code(), "name", "UNKNOWN")  # None when nothing set a code
    return name


class MetricsInterceptor(BehaviorInterceptor):
    """Counts RPCs by method, model and final status, and times them."""

    def _observe(self, method: str, started: float, context: aio.ServicerContext[Any, Any],
                 exc: BaseException | None) -> None:
        child(GRPC_DURATION, method).observe(time.perf_counter() - started)
        child(GRPC_REQUESTS, method, current_model.get() or "-", _code_of(context, exc)).inc()

    async def around_unary(
        self, method: str, behavior: UnaryBehavior, request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> Any:
        started = time.perf_counter()
        current_model.set("")  # this call's model, once resolved (not an earlier call's)
        logged = access.wanted(method, context)
        try:
            result = await behavior(request, context)
        except BaseException as exc:
            self._observe(method, started, context, exc)
            if logged:
                access.write(method, context, started, _code_of(context, exc), None)
            raise
        self._observe(method, started, context, None)
        if logged:
            access.write(method, context, started, "OK", None)
        return result

    async def around_stream(
        self, method: str, behavior: StreamBehavior, request: Any,
        context: aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        current_model.set("")
        logged = access.wanted(method, context)
        ttft: float | None = None
        try:
            async with delegate(behavior(request, context)) as items:
                async for item in items:
                    if logged and ttft is None:
                        ttft = time.perf_counter() - started
                    yield item
        except BaseException as exc:
            self._observe(method, started, context, exc)
            if logged:
                access.write(method, context, started, _code_of(context, exc), ttft)
            raise
        self._observe(method, started, context, None)
        if logged:
            access.write(method, context, started, "OK", ttft)
