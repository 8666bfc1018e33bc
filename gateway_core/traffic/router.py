"""One request's way through its model's pool and fallbacks: attempts, retries, stage timeouts.

A ``Route`` is made per request with the chain of pools to try (the model's, then its
fallbacks'). For each pool it waits for admission, then makes attempts on endpoints not tried
yet, with jittered backoff, within the request's deadline and the pool's retry budget, while the
failure is one another endpoint may not have (``retryable``). A stream is held until its first
content (the role-only preamble is kept back), so that everything before it can still be retried;
after that, a failure ends the stream with an error (``first_token`` and ``idle`` stage timeouts
watch the waits). The route remembers what served the request and how many attempts it took:
the servicer reports them to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import Any, Protocol, TypeVar

from gateway_common import tracing
from gateway_common.core_api import ATTEMPTS_KEY, SERVED_MODEL_KEY, SHOULD_RETRY_KEY
from gateway_common.metrics import child
from gateway_core.errors import (
    GatewayError,
    ModelBusy,
    NoHealthyUpstream,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from gateway_core.limits.limiter import Gate
from gateway_core.providers.base import Call, Provider
from gateway_core.traffic import metrics
from gateway_core.traffic.pool import Endpoint, Pool

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")

RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_STAGES = frozenset({"connect", "headers", "first_token"})
# How many times a stream may move to another endpoint after its first content.
MAX_MOVES = 2
# The longest upstream Retry-After the gateway waits out itself before trying the same endpoint.
MAX_RETRY_AFTER = 10.0


def retryable(exc: BaseException) -> bool:
    """Whether another attempt (another endpoint, or a fallback) may succeed where this failed:
    the upstream was unreachable, overloaded, slow to start or broken before any content. Never a
    client error, never the request's own deadline."""
    if isinstance(exc, UpstreamRateLimited | NoHealthyUpstream | ModelBusy):
        return True
    if isinstance(exc, UpstreamTimeout):
        return exc.stage in RETRY_STAGES
    if isinstance(exc, UpstreamError):
        if exc.kind == "status":
            return exc.status in RETRY_STATUSES or exc.status == 0  # 0: an error event
        return exc.kind in ("connect", "protocol")
    return False


def _health_outcome(exc: BaseException) -> str:
    """What an attempt's failure says of the endpoint: ``failed`` (connect errors, 5xx,
    garbage, timeouts of its stages) or ``neutral`` (the caller's fault or departure, a 429)."""
    if isinstance(exc, UpstreamTimeout):
        return "failed" if exc.stage != "deadline" else "neutral"
    if isinstance(exc, UpstreamError):
        return "failed" if exc.kind in ("connect", "protocol", "status", "timeout") else "neutral"
    return "neutral"


def _outcome_label(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamRateLimited):
        return "rate_limited"
    if isinstance(exc, UpstreamError):
        return "error"
    if isinstance(exc, GatewayError):
        return "rejected"
    return "cancelled"


def _retry_after(exc: BaseException) -> float | None:
    value = exc.fields.retry_after if isinstance(exc, GatewayError) else None
    return float(value) if value is not None and value.isdigit() else None


class Watchdog:
    """Cancels the current task when a wait on the upstream lasts ``seconds`` (a stage timeout):
    one timer re-armed as needed, not one per chunk. ``waiting`` marks the waits it watches
    (time spent handing chunks on to the caller is not the upstream's)."""

    __slots__ = ("fired", "handle", "last", "loop", "seconds", "task", "waiting")

    def __init__(self, seconds: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.seconds = seconds
        self.task = asyncio.current_task()
        self.last = self.loop.time()
        self.waiting = True
        self.fired = False
        self.handle = self.loop.call_at(self.last + seconds, self._check)

    def _check(self) -> None:
        due = self.last + self.seconds
        if self.waiting and self.loop.time() >= due - 0.001:
            self.fired = True
            if self.task is not None:
                self.task.cancel()
            return
        self.handle = self.loop.call_at(max(due, self.loop.time() + 0.001), self._check)

    def stop(self) -> None:
        self.handle.cancel()

    def expired(self) -> bool:
        """After a CancelledError: whether this watchdog caused it (and undo the cancel)."""
        if self.fired and self.task is not None:
            self.task.uncancel()
            return True
        return False


class Route:
    """One request's attempts over ``chain`` (the model's pool, then its fallbacks')."""

    def __init__(self, chain: Sequence[Pool], call: Call, *, priority: str = "standard",
                 tenant: str = "", key: str | None = None, gate: Gate | None = None) -> None:
        self.chain = chain
        self.call = call
        self.priority = priority
        self.tenant = tenant
        self.key = key
        self.attempts = 0
        self.served = chain[0].model
        self.last: BaseException | None = None
        self.tried: list[Endpoint] = []
        # Continues a stream that failed after its first content (resume_streams), or None.
        self.resumer: Resumer[Any] | None = None
        # The request's rate limits and budgets, when any apply.
        self.gate = gate
        # The answer's usage (unary), or the stream's last chunk: for the access log.
        self.usage: Any = None
        self.tail: Any = None
        self.end_user = ""
        # Tracing (on): the request's span in the core, and the current attempt's.
        self.span: Any = None
        self.attempt_span: Any = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What served the request, for the caller (headers at the edge), and its rate limits'
        state (OpenAI's x-ratelimit-* headers)."""
        served = ((SERVED_MODEL_KEY, self.served), (ATTEMPTS_KEY, str(self.attempts)))
        if self.gate is not None and self.gate.headers:
            return (*served, *self.gate.headers)
        return served

    def _annotated(self, exc: GatewayError) -> GatewayError:
        """The error the caller gets: it says what was tried, and tells SDKs not to retry what
        the gateway already retried (or what cannot succeed on a retry)."""
        extra = list(self.metadata())
        if self.attempts > 1 or not retryable(exc):
            extra.append((SHOULD_RETRY_KEY, "false"))
        exc.extra = tuple(extra)
        return exc

    async def _admit(self, index: int, pool: Pool) -> bool:
        """Take a slot on ``pool`` (waiting when the model is busy). False when the pool cannot
        serve but a fallback may; raises when it was the last."""
        try:
            pool.check_up()
            if not pool.admission.try_enter(self.priority):
                await pool.admission.acquire(self.priority, self.tenant, self.call.remaining())
        except (NoHealthyUpstream, ModelBusy) as exc:
            if index + 1 < len(self.chain):
                self.last = exc
                return False
            raise self._annotated(_worst(self.last, exc)) from None
        pool.budget.request()
        if index:
            child(metrics.FALLBACKS, self.chain[0].model, pool.model).inc()
        self.call.connect_timeout = pool.connect
        self.call.headers_timeout = pool.headers
        self.tried = []
        return True

    async def _next(self, pool: Pool, n: int) -> Endpoint | None:
        """The endpoint of the ``n``-th attempt (n > 0) on ``pool``, after the backoff; None
        when the last failure, the budget or the deadline forbid one. A fresh endpoint, else
        (after a 429 whose Retry-After fits the deadline) the one that asked to wait."""
        last = self.last
        if last is None or not retryable(last):
            return None
        tried = self.tried
        e = pool.pick(tried, self.key)
        wait = 0.0
        if e is None:
            if not isinstance(last, UpstreamRateLimited):
                return None
            after = _retry_after(last)
            if after is None or after > MAX_RETRY_AFTER \
                    or after >= self.call.deadline - asyncio.get_running_loop().time():
                return None
            e, wait = pool.pick([t for t in tried if t is not tried[-1]], self.key), after
            if e is None:
                return None
        if not pool.budget.try_spend():
            child(metrics.RETRY_BUDGET_EXHAUSTED, pool.model).inc()
            return None
        if n == 1 and isinstance(last, UpstreamError) and last.kind == "connect":
            # A refused connection cost the upstream nothing: the first failover is immediate.
            delay = 0.0
        else:
            base = pool.retries.backoff_ms / 1000.0 * (2 ** (n - 1))
            delay = max(wait, random.uniform(base / 2, base))
        if delay >= self.call.deadline - asyncio.get_running_loop().time():
            return None
        child(metrics.RETRIES, pool.model).inc()
        if delay > 0:
            await asyncio.sleep(delay)
        return e

    def _start(self, pool: Pool, e: Endpoint) -> None:
        self.tried.append(e)
        self.attempts += 1
        self.served = pool.model
        pool.begin(e)
        if self.span is not None:
            self.attempt_span = tracing.start(
                f"upstream {pool.model}", tracing.header_of(self.span), "CLIENT",
                {"server.address": e.label, "gen_ai.request.model": pool.model,
                 "gateway.attempt": self.attempts})
            self.call.traceparent = tracing.header_of(self.attempt_span)

    def _failed(self, pool: Pool, e: Endpoint, exc: BaseException) -> None:
        pool.end(e, _health_outcome(exc))
        if self.attempt_span is not None:
            tracing.end(self.attempt_span, exc)
            self.attempt_span = None
        child(metrics.ATTEMPTS, pool.model, e.label, _outcome_label(exc)).inc()
        if isinstance(exc, GatewayError):
            log.warning("model %s: attempt %d on %s failed: %s", pool.model, self.attempts,
                        e.label, exc.message)

    def _succeeded(self, pool: Pool, e: Endpoint) -> None:
        pool.end(e, "ok")
        if self.attempt_span is not None:
            tracing.end(self.attempt_span)
            self.attempt_span = None
        child(metrics.ATTEMPTS, pool.model, e.label, "ok").inc()

    def _exhausted(self) -> GatewayError:
        assert isinstance(self.last, GatewayError)
        return self._annotated(self.last)

    def _left(self) -> float:
        return self.call.deadline - asyncio.get_running_loop().time()

    async def unary(self, fn: Callable[[Provider, Call], Awaitable[T]]) -> T:
        """The answer of the first attempt that succeeds (see the module's docstring), within
        the request's limits when it has any (``gate``)."""
        gate = self.gate
        if gate is None:
            result = await self._unary(fn)
            self.usage = getattr(result, "usage", None)
            return result
        await gate.enter(self._left())
        tokens = None
        try:
            result = await self._unary(fn)
            usage = self.usage = getattr(result, "usage", None)
            if usage is not None and usage.total_tokens:
                tokens = usage.total_tokens
            return result
        finally:
            gate.leave(tokens)

    async def _unary(self, fn: Callable[[Provider, Call], Awaitable[T]]) -> T:
        for index, pool in enumerate(self.chain):
            if not await self._admit(index, pool):
                continue
            try:
                e = pool.pick(self.tried, self.key)
                n = 0
                while e is not None:
                    self._start(pool, e)
                    try:
                        result = await fn(e.provider, self.call)
                    except BaseException as exc:
                        self._failed(pool, e, exc)
                        if not isinstance(exc, GatewayError):
                            raise
                        self.last = exc
                        n += 1
                        e = await self._next(pool, n) if n < pool.retries.attempts else None
                        continue
                    self._succeeded(pool, e)
                    return result
            finally:
                pool.admission.release(self.priority)
            if not retryable(self.last or Exception()):
                break
        raise self._exhausted()

    def stream(self, fn: Callable[[Provider, Call], AsyncIterator[C]],
               committed: Callable[[C], bool]) -> AsyncGenerator[C, None]:
        """The chunks of the first attempt that reaches its first content, then the rest of its
        stream (see the module's docstring), within the request's limits when it has any."""
        chunks = self._stream(fn, committed)
        return chunks if self.gate is None else self._gated(self.gate, chunks)

    async def _gated(self, gate: Gate, chunks: AsyncGenerator[C, None]
                     ) -> AsyncGenerator[C, None]:
        """``chunks`` admitted by ``gate``, and reconciled with the final usage (or, when the
        stream ends early, the prompt's estimate plus about a token per chunk sent)."""
        await gate.enter(self._left())
        tokens = None
        sent = 0
        last = None
        try:
            async with aclosing(chunks):
                async for last in chunks:
                    sent += 1
                    yield last
            usage = getattr(last, "usage", None)
            if usage is not None and last is not None and last.HasField("usage"):  # type: ignore[attr-defined]
                tokens = usage.total_tokens
        finally:
            gate.leave(tokens if tokens is not None else
                       (gate.estimate + sent if sent else None))

    async def _stream(self, fn: Callable[[Provider, Call], AsyncIterator[C]],
                      committed: Callable[[C], bool]) -> AsyncGenerator[C, None]:
        """One generator layer, the loops inline: every chunk of every stream passes through
        here."""
        for index, pool in enumerate(self.chain):
            if not await self._admit(index, pool):
                continue
            try:
                e = pool.pick(self.tried, self.key)
                n = 0
                while e is not None:
                    self._start(pool, e)
                    chunks = fn(e.provider, self.call)
                    try:
                        held = await self._first(chunks, pool, committed)
                    except BaseException as exc:
                        self._failed(pool, e, exc)
                        await _close(chunks)
                        if not isinstance(exc, GatewayError):
                            raise
                        self.last = exc
                        n += 1
                        e = await self._next(pool, n) if n < pool.retries.attempts else None
                        continue
                    # Committed: from here on, no retry (only a resume, when configured).
                    resumer = self.resumer
                    moves = 0
                    while True:
                        watchdog = Watchdog(pool.idle) if pool.idle is not None else None
                        try:
                            for chunk in held:
                                if resumer is not None:
                                    resumer.saw(chunk)
                                yield chunk
                            held = []
                            if watchdog is None and resumer is None:
                                async for chunk in chunks:
                                    yield chunk
                                self.tail = chunk
                            else:
                                try:
                                    if watchdog is not None:
                                        watchdog.last = watchdog.loop.time()
                                        watchdog.waiting = True
                                    async for chunk in chunks:
                                        # (the watchdog sees only the waits on the upstream)
                                        if watchdog is not None:
                                            watchdog.waiting = False
                                        if resumer is not None:
                                            resumer.saw(chunk)
                                        yield chunk
                                        if watchdog is not None:
                                            watchdog.last = watchdog.loop.time()
                                            watchdog.waiting = True
                                    self.tail = chunk
                                except asyncio.CancelledError:
                                    if watchdog is not None and watchdog.expired():
                                        raise UpstreamTimeout(
                                            f"model '{pool.model}': the upstream sent nothing "
                                            f"for {pool.idle:g} s mid-stream (timeouts.idle)",
                                            stage="idle") from None
                                    raise
                        except BaseException as exc:
                            self._failed(pool, e, exc)
                            await _close(chunks)
                            if not isinstance(exc, GatewayError):
                                raise
                            if resumer is None or moves >= MAX_MOVES \
                                    or not resumer.can_resume() or not _resumable(exc):
                                raise self._annotated(exc) from None
                            moved = await self._move(pool, resumer, committed)
                            if moved is None:
                                raise self._annotated(exc) from None
                            moves += 1
                            e, chunks, held = moved
                            child(metrics.RESUMED, pool.model).inc()
                            log.warning("model %s: stream moved to %s after: %s", pool.model,
                                        e.label, exc.message)
                            continue
                        finally:
                            if watchdog is not None:
                                watchdog.stop()
                        self._succeeded(pool, e)
                        return
            finally:
                pool.admission.release(self.priority)
            if not retryable(self.last or Exception()):
                break
        raise self._exhausted()

    async def _move(self, pool: Pool, resumer: Resumer[C], committed: Callable[[C], bool]
                    ) -> tuple[Endpoint, AsyncIterator[C], list[C]] | None:
        """Start the continuation of a failed stream on another endpoint, up to its first new
        content; None when no endpoint could."""
        while (e := pool.pick(self.tried, self.key)) is not None:
            self._start(pool, e)
            chunks = resumer.continue_on(e.provider, self.call)
            try:
                held = await self._first(chunks, pool, committed)
            except BaseException as exc:
                self._failed(pool, e, exc)
                await _close(chunks)
                if not isinstance(exc, GatewayError):
                    raise
                continue
            return e, chunks, resumer.continuation(held)
        return None

    async def _first(self, chunks: AsyncIterator[C], pool: Pool,
                     committed: Callable[[C], bool]) -> list[C]:
        """The chunks up to and with the first content (all of them when the stream ends
        first), within the first-token timeout."""
        held: list[C] = []
        watchdog = Watchdog(pool.first_token) if pool.first_token is not None else None
        try:
            async for chunk in chunks:
                held.append(chunk)
                if committed(chunk):
                    break
        except asyncio.CancelledError:
            if watchdog is not None and watchdog.expired():
                raise UpstreamTimeout(
                    f"model '{pool.model}': the upstream sent no token within "
                    f"{pool.first_token:g} s (timeouts.first_token)", stage="first_token"
                ) from None
            raise
        finally:
            if watchdog is not None:
                watchdog.stop()
        return held


class Resumer(Protocol[C]):
    """What a stream needs to continue on another endpoint (``resume_streams``)."""

    def saw(self, chunk: C) -> None:
        """A chunk that reached the caller."""

    def can_resume(self) -> bool:
        """Whether what was sent can be continued (text only, one choice, not finished)."""

    def continue_on(self, provider: Provider, call: Call) -> AsyncIterator[C]:
        """The continuation's stream: the prompt plus the text already sent."""

    def continuation(self, held: list[C]) -> list[C]:
        """The continuation's first chunks as the caller should see them (no second preamble)."""


def _resumable(exc: GatewayError) -> bool:
    """Failures of the endpoint, not of the request: a stream cut, an error event, a stall."""
    if isinstance(exc, UpstreamTimeout):
        return exc.stage == "idle"
    return isinstance(exc, UpstreamError) and exc.kind in ("connect", "protocol", "status")


def _worst(last: BaseException | None, refusal: GatewayError) -> GatewayError:
    """What to report when the last pool refused the request: an earlier pool's failure says
    more than the refusal, when there was one."""
    if isinstance(last, GatewayError) and not isinstance(last, NoHealthyUpstream | ModelBusy):
        return last
    return refusal


async def _close(chunks: AsyncIterator[object]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.debug("closing a failed upstream stream failed", exc_info=True)
