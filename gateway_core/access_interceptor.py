"""The core's access log: one line per inference call of a gRPC caller (the edge's calls are
logged by the edge, which knows more of them). Fields as in ``gateway_common.access_log``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from gateway_common import access_log
from gateway_common.asyncgen import delegate
from gateway_common.core_api import (
    ATTEMPTS_KEY,
    END_USER_LOG_KEY,
    ENDPOINT_LOG_KEY,
    FROM_EDGE_KEY,
    MODEL_KEY,
    REQUEST_ID_KEY,
    SERVED_MODEL_KEY,
    TOKEN_LOG_KEY,
    USAGE_LOG_KEY,
)
from gateway_core.errors import GatewayError
from gateway_core.interceptors import BehaviorInterceptor, StreamBehavior, UnaryBehavior

Ctx = aio.ServicerContext[Any, Any]
_INFERENCE = "/inference_gateway.v1.Inference/"


def _status(exc: BaseException | None) -> str:
    if exc is None:
        return "OK"
    if isinstance(exc, GatewayError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


class AccessLogInterceptor(BehaviorInterceptor):
    def applies_to(self, method: str) -> bool:
        return method.startswith(_INFERENCE)

    @staticmethod
    def _from_edge(context: Ctx) -> bool:
        return any(k == FROM_EDGE_KEY for k, _ in context.invocation_metadata() or ())

    def _write(self, method: str, context: Ctx, started: float, exc: BaseException | None,
               ttft: float | None) -> None:
        md = dict(context.invocation_metadata() or ())
        trailers = {k: v for k, v in (context.trailing_metadata() or ()) if isinstance(v, str)}
        usage = trailers.get(USAGE_LOG_KEY, "")
        prompt, _, completion = usage.partition(",")
        attempts = trailers.get(ATTEMPTS_KEY)
        access_log.write({
            "request_id": md.get(REQUEST_ID_KEY) or None, "dialect": "grpc", "route": method,
            "model": trailers.get(MODEL_KEY) or None,
            "served_model": trailers.get(SERVED_MODEL_KEY),
            "endpoint": trailers.get(ENDPOINT_LOG_KEY),
            "attempts": int(attempts) if attempts and attempts.isdigit() else None,
            "status": _status(exc),
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
            "prompt_tokens": int(prompt) if prompt.isdigit() else None,
            "completion_tokens": int(completion) if completion.isdigit() else None,
            "token_id": trailers.get(TOKEN_LOG_KEY), "end_user": trailers.get(END_USER_LOG_KEY),
            "error": exc.reason if isinstance(exc, GatewayError) else None,
        })

    async def around_unary(self, method: str, behavior: UnaryBehavior, request: Any,
                           context: Ctx) -> Any:
        if not access_log.enabled() or self._from_edge(context):
            return await behavior(request, context)
        started = time.perf_counter()
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            self._write(method, context, started, exc, None)
            raise
        self._write(method, context, started, None, None)
        return response

    async def around_stream(self, method: str, behavior: StreamBehavior, request: Any,
                            context: Ctx) -> AsyncIterator[Any]:
        if not access_log.enabled() or self._from_edge(context):
            async with delegate(behavior(request, context)) as items:
                async for item in items:
                    yield item
            return
        started = time.perf_counter()
        ttft = None
        try:
            async with delegate(behavior(request, context)) as items:
                async for item in items:
                    if ttft is None:
                        ttft = time.perf_counter() - started
                    yield item
        except BaseException as exc:
            self._write(method, context, started, exc, ttft)
            raise
        self._write(method, context, started, None, ttft)
