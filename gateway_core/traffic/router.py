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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

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
from gateway_core.providers.base import Call, Provider
from gateway_core.traffic import metrics
from gateway_core.traffic.pool import Endpoint, Pool

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C")

RETRY_STATUSES = frozenset({502, 503, 504})
RETRY_STAGES = frozenset({"connect", "headers", "first_token"})
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
                 tenant: str = "", key: str | None = None) -> None:
        self.chain = chain
        self.call = call
        self.priority = priority
        self.tenant = tenant
        self.key = key
        self.attempts = 0
        self.served = chain[0].model
        self.last: BaseException | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What served the request, for the caller (headers at the edge)."""
        return ((SERVED_MODEL_KEY, self.served), (ATTEMPTS_KEY, str(self.attempts)))

    def _annotated(self, exc: GatewayError) -> GatewayError:
        """The error the caller gets: it says what was tried, and tells SDKs not to retry what
        the gateway already retried (or what cannot succeed on a retry)."""
        extra = list(self.metadata())
        if self.attempts > 1 or not retryable(exc):
            extra.append((SHOULD_RETRY_KEY, "false"))
        exc.extra = tuple(extra)
        return exc

    async def _admit(self, pool: Pool) -> bool:
        """Wait for a slot on ``pool``; False (after noting why) when it has no healthy
        endpoint or no slot for a fallback."""
        pool.check_up()
        await pool.admission.acquire(self.priority, self.tenant, self.call.remaining())
        pool.budget.request()
        return True

    def _stage(self, pool: Pool) -> None:
        self.call.connect_timeout = pool.connect
        self.call.headers_timeout = pool.headers

    async def _pause(self, pool: Pool, n: int, last: BaseException | None) -> bool:
        """Before the ``n``-th attempt on ``pool``: False when the budget or the deadline forbid
        one; else wait the jittered backoff."""
        if n == 0:
            return True
        if not pool.budget.try_spend():
            child(metrics.RETRY_BUDGET_EXHAUSTED, pool.model).inc()
            return False
        base = pool.retries.backoff_ms / 1000.0 * (2 ** (n - 1))
        delay = random.uniform(base / 2, base)
        if delay >= self.call.deadline - asyncio.get_running_loop().time():
            return False
        child(metrics.RETRIES, pool.model).inc()
        if delay > 0:
            await asyncio.sleep(delay)
        return True

    def _next(self, pool: Pool, tried: list[Endpoint], last: BaseException | None
              ) -> tuple[Endpoint | None, float]:
        """The endpoint of the next attempt and how long to wait for it first: a fresh one, else
        (after a 429 whose Retry-After fits the deadline) the one that asked to wait."""
        e = pool.pick(tried, self.key)
        if e is not None or last is None or not isinstance(last, UpstreamRateLimited):
            return e, 0.0
        wait = _retry_after(last)
        left = self.call.deadline - asyncio.get_running_loop().time()
        if wait is None or wait > MAX_RETRY_AFTER or wait >= left:
            return None, 0.0
        return pool.pick([t for t in tried if t is not tried[-1]], self.key), wait

    async def _attempts(self, pool: Pool) -> AsyncIterator[Endpoint]:
        """Endpoints to try in turn on ``pool`` (the caller reports each outcome through
        ``self.last``)."""
        tried: list[Endpoint] = []
        for n in range(pool.retries.attempts):
            last = self.last
            if n and not retryable(last or Exception()):
                return
            e, wait = self._next(pool, tried, last)
            if e is None or not await self._pause(pool, n, last):
                return
            if wait:
                await asyncio.sleep(wait)
            tried.append(e)
            self.attempts += 1
            self.served = pool.model
            yield e

    def _failed(self, pool: Pool, e: Endpoint, exc: BaseException) -> None:
        pool.end(e, _health_outcome(exc))
        child(metrics.ATTEMPTS, pool.model, e.label, _outcome_label(exc)).inc()
        if isinstance(exc, GatewayError):
            log.warning("model %s: attempt %d on %s failed: %s", pool.model, self.attempts,
                        e.label, exc.message)

    def _succeeded(self, pool: Pool, e: Endpoint) -> None:
        pool.end(e, "ok")
        child(metrics.ATTEMPTS, pool.model, e.label, "ok").inc()

    def _fell_back(self, index: int) -> None:
        if index:
            child(metrics.FALLBACKS, self.chain[0].model, self.chain[index].model).inc()

    async def unary(self, fn: Callable[[Provider, Call], Awaitable[T]]) -> T:
        """The answer of the first attempt that succeeds (see the module's docstring)."""
        for index, pool in enumerate(self.chain):
            try:
                await self._admit(pool)
            except (NoHealthyUpstream, ModelBusy) as exc:
                if index + 1 < len(self.chain):
                    self.last = exc
                    continue
                raise self._annotated(_worst(self.last, exc)) from None
            self._fell_back(index)
            self._stage(pool)
            try:
                async for e in self._attempts(pool):
                    pool.begin(e)
                    try:
                        result = await fn(e.provider, self.call)
                    except BaseException as exc:
                        self._failed(pool, e, exc)
                        if not isinstance(exc, GatewayError):
                            raise
                        self.last = exc
                        continue
                    self._succeeded(pool, e)
                    return result
            finally:
                pool.admission.release(self.priority)
            if not retryable(self.last or Exception()):
                break
        assert isinstance(self.last, GatewayError)
        raise self._annotated(self.last)

    async def stream(self, fn: Callable[[Provider, Call], AsyncIterator[C]],
                     committed: Callable[[C], bool]) -> AsyncIterator[C]:
        """The chunks of the first attempt that reaches its first content (see the module's
        docstring)."""
        for index, pool in enumerate(self.chain):
            try:
                await self._admit(pool)
            except (NoHealthyUpstream, ModelBusy) as exc:
                if index + 1 < len(self.chain):
                    self.last = exc
                    continue
                raise self._annotated(_worst(self.last, exc)) from None
            self._fell_back(index)
            self._stage(pool)
            try:
                async for e in self._attempts(pool):
                    pool.begin(e)
                    chunks = fn(e.provider, self.call)
                    try:
                        held = await self._first(chunks, pool, committed)
                    except BaseException as exc:
                        self._failed(pool, e, exc)
                        await _close(chunks)
                        if not isinstance(exc, GatewayError):
                            raise
                        self.last = exc
                        continue
                    try:
                        for chunk in held:
                            yield chunk
                        del held
                        async for chunk in self._rest(chunks, pool):
                            yield chunk
                    except BaseException as exc:
                        self._failed(pool, e, exc)
                        await _close(chunks)
                        if isinstance(exc, GatewayError):
                            raise self._annotated(exc) from None
                        raise
                    self._succeeded(pool, e)
                    return
            finally:
                pool.admission.release(self.priority)
            if not retryable(self.last or Exception()):
                break
        assert isinstance(self.last, GatewayError)
        raise self._annotated(self.last)

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

    async def _rest(self, chunks: AsyncIterator[C], pool: Pool) -> AsyncIterator[C]:
        """The rest of the stream, each wait on the upstream within the idle timeout."""
        if pool.idle is None:
            async for chunk in chunks:
                yield chunk
            return
        watchdog = Watchdog(pool.idle)
        loop = watchdog.loop
        it = chunks.__aiter__()
        try:
            while True:
                watchdog.last = loop.time()
                watchdog.waiting = True
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watchdog.expired():
                        raise UpstreamTimeout(
                            f"model '{pool.model}': the upstream sent nothing for "
                            f"{pool.idle:g} s mid-stream (timeouts.idle)", stage="idle"
                        ) from None
                    raise
                watchdog.waiting = False
                yield chunk
        finally:
            watchdog.stop()


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
