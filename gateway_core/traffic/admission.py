"""Admission control of one model: at most ``max_concurrency`` requests in flight, a bounded,
prioritised wait for the others.

A request that finds room starts at once. Otherwise it queues, at most ``max_queued`` of them,
for at most ``queue_timeout`` seconds (never past its own deadline), then gets ``ModelBusy``
(429 with Retry-After). Slots go to the queued classes in strict order (``critical``, then
``standard``, then ``sheddable``) and, within a class, to its tenants (tokens) in turn, so one
caller's burst cannot starve the others. When the queue is full, a request of a better class
takes the place of the newest queued one of the worst class, which is refused at once: the
``sheddable`` go first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable

from gateway_common.config import PRIORITIES
from gateway_common.metrics import child
from gateway_core.errors import ModelBusy, retry_after_fields
from gateway_core.traffic import metrics

RANK = {name: i for i, name in enumerate(PRIORITIES)}


class _Waiter:
    __slots__ = ("future", "priority", "tenant")

    def __init__(self, future: asyncio.Future[None], priority: str, tenant: str) -> None:
        self.future = future
        self.priority = priority
        self.tenant = tenant


class Admission:
    """The gate of one model (see the module's docstring). ``has_room`` says whether the pool
    has an endpoint that can take one more request (its own caps)."""

    def __init__(self, model: str, max_concurrency: int, queue_timeout: float, max_queued: int,
                 has_room: Callable[[], bool]) -> None:
        self.model = model
        self.max_concurrency = max_concurrency
        self.queue_timeout = queue_timeout
        self.max_queued = max_queued
        self.has_room = has_room
        self.active = 0
        self.queued = 0
        # Per class (PRIORITIES' order): requests holding a slot, and waiting (for /metrics).
        self.admitted = [0] * len(PRIORITIES)
        self.waiting = [0] * len(PRIORITIES)
        # Per class: tenant -> its waiters, tenants in the order they are served next.
        self.classes: list[OrderedDict[str, deque[_Waiter]]] = [OrderedDict() for _ in PRIORITIES]

    def _room(self) -> bool:
        return (self.max_concurrency == 0 or self.active < self.max_concurrency) \
            and self.has_room()

    def _busy(self, message: str, priority: str, why: str) -> ModelBusy:
        child(metrics.SHED, self.model, priority, why).inc()
        return ModelBusy(f"model '{self.model}' {message}; retry shortly",
                         fields=retry_after_fields(self.queue_timeout or 1.0))

    def _grant(self, priority: str) -> None:
        self.active += 1
        self.admitted[RANK[priority]] += 1

    def try_enter(self, priority: str) -> bool:
        """Take a slot at once when one is free and nobody waits (the usual case, no await)."""
        if self.queued == 0 and self._room():
            self.active += 1
            self.admitted[RANK[priority]] += 1
            return True
        return False

    async def acquire(self, priority: str, tenant: str, remaining: float) -> None:
        """Wait for a slot (see the module's docstring); ``remaining``: the request's time left."""
        if self.try_enter(priority):
            return
        if self.queue_timeout <= 0:
            raise self._busy("is at its concurrency limit", priority, "full")
        if self.queued >= self.max_queued and not self._shed_for(priority):
            raise self._busy("has too many requests waiting", priority, "queue_full")
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), priority, tenant)
        self.classes[RANK[priority]].setdefault(tenant, deque()).append(waiter)
        self.queued += 1
        self.waiting[RANK[priority]] += 1
        try:
            async with asyncio.timeout(min(self.queue_timeout, remaining)):
                await waiter.future
        except TimeoutError:
            self._drop(waiter)
            raise self._busy(f"had no free slot within {self.queue_timeout:g} s", priority,
                             "timeout") from None
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled() \
                    and waiter.future.exception() is None:
                self.release(priority)  # granted, then cancelled before it could start
            else:
                self._drop(waiter)
            raise

    def release(self, priority: str) -> None:
        """A request that held a slot ended; its slot goes to the next waiter."""
        self.active -= 1
        self.admitted[RANK[priority]] -= 1
        if self.queued:
            self.wake()

    def wake(self) -> None:
        """Give free slots to waiters, best class first, tenants in turn."""
        while self.queued and self._room():
            waiter = self._next()
            if waiter is None:
                return
            self._grant(waiter.priority)
            waiter.future.set_result(None)

    def _next(self) -> _Waiter | None:
        for tenants in self.classes:
            while tenants:
                tenant, waiters = next(iter(tenants.items()))
                waiter = waiters.popleft()
                if waiters:
                    tenants.move_to_end(tenant)  # the tenant's next waiter goes after the others
                else:
                    del tenants[tenant]
                self.queued -= 1
                self.waiting[RANK[waiter.priority]] -= 1
                if not waiter.future.done():
                    return waiter
        return None

    def _drop(self, waiter: _Waiter) -> None:
        tenants = self.classes[RANK[waiter.priority]]
        waiters = tenants.get(waiter.tenant)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del tenants[waiter.tenant]
            self.queued -= 1
            self.waiting[RANK[waiter.priority]] -= 1

    def _shed_for(self, priority: str) -> bool:
        """Refuse the newest queued request of the worst class below ``priority`` to make room;
        False when there is none."""
        for rank in range(len(PRIORITIES) - 1, RANK[priority], -1):
            tenants = self.classes[rank]
            if not tenants:
                continue
            tenant = next(reversed(tenants))
            waiter = tenants[tenant][-1]
            self._drop(waiter)
            waiter.future.set_exception(
                self._busy("shed this request for one of a higher priority", waiter.priority,
                           "shed"))
            return True
        return False
