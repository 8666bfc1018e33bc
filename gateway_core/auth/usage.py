"""Usage accounting: one record per inference call, written in batches off the hot path.

The interceptor notes who called (``current_identity``), the model, the task, the token counts
(from the response's ``usage``, or the final stream message's), the status and the latency, and
appends a record to an in-memory list: no I/O on the request. A background task writes the list
in one batch every second (or sooner when it grows). When the store falls behind, records beyond
``max_pending`` are dropped and counted rather than slowing requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from prometheus_client import Counter

from gateway_common.asyncgen import delegate
from gateway_core.auth.identity import current_identity
from gateway_core.auth.records import UsageRecord
from gateway_core.auth.store import TokenStore
from gateway_core.errors import GatewayError
from gateway_core.interceptors import (
    BehaviorInterceptor,
    StreamBehavior,
    UnaryBehavior,
    current_model,
    current_request_id,
)

log = logging.getLogger(__name__)

Ctx = aio.ServicerContext[Any, Any]

TASK_OF = {
    "Chat": "chat", "ChatStream": "chat", "Complete": "completion",
    "CompleteStream": "completion", "Embed": "embedding", "Rerank": "rerank",
    "Classify": "classification", "Transcribe": "transcription",
    "TranscribeStream": "transcription", "GenerateSpeech": "speech", "GenerateImage": "image",
    "Translate": "translation", "Predict": "predict",
}
_INFERENCE = "/inference_gateway.v1.Inference/"

USAGE_DROPPED = Counter(
    "gateway_usage_dropped_total", "Usage records dropped because the store fell behind.")


class UsageRecorder:
    """Collects usage records and writes them in batches (see module doc)."""

    def __init__(self, store: TokenStore, *, flush_seconds: float = 1.0, batch_size: int = 500,
                 max_pending: int = 100_000) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.batch_size = batch_size
        self.max_pending = max_pending
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def record(self, rec: UsageRecord) -> None:
        if len(self._pending) >= self.max_pending:
            USAGE_DROPPED.inc()
            return
        self._pending.append(rec)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def flush(self) -> None:
        """Write what is pending now (also called before a usage query, to read our writes)."""
        async with self._lock:
            while self._pending:
                batch = self._pending[:self.batch_size * 10]
                del self._pending[:len(batch)]
                try:
                    await self.store.record_usage(batch)
                except Exception as exc:
                    USAGE_DROPPED.inc(len(batch))
                    log.warning("dropped %d usage records: %s", len(batch), exc)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            await self.flush()


def _status(exc: BaseException) -> str:
    if isinstance(exc, GatewayError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "INTERNAL"


class UsageInterceptor(BehaviorInterceptor):
    """Records one UsageRecord per inference call made by an authenticated caller."""

    def __init__(self, recorder: UsageRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def applies_to(self, method: str) -> bool:
        return method.startswith(_INFERENCE) and method[len(_INFERENCE):] in TASK_OF

    def _record(self, method: str, request: Any, usage: Any, status: str, started: float
                ) -> None:
        identity = current_identity.get()
        if identity is None:  # refused before authentication: nothing to account to
            return
        model = current_model.get() or str(getattr(request, "model", ""))[:200]
        self.recorder.record(UsageRecord(
            ts=time.time(), token_id=identity.token_id, model=model, task=TASK_OF[method],
            prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            completion_tokens=usage.completion_tokens if usage is not None else 0,
            status=status, latency_ms=(time.perf_counter() - started) * 1000,
            end_user=str(getattr(request, "end_user", ""))[:256],
            request_id=current_request_id.get()[:128],
        ))

    async def around_unary(self, method: str, behavior: UnaryBehavior, request: Any,
                           context: Ctx) -> Any:
        started = time.perf_counter()
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            self._record(method, request, None, _status(exc), started)
            raise
        self._record(method, request, getattr(response, "usage", None), "OK", started)
        return response

    async def around_stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Ctx,
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        usage = None
        try:
            async with delegate(behavior(request, context)) as items:
                async for item in items:
                    if item.HasField("usage"):
                        usage = item.usage
                    yield item
        except BaseException as exc:
            self._record(method, request, usage, _status(exc), started)
            raise
        self._record(method, request, usage, "OK", started)
