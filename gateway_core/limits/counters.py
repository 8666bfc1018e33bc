"""The counters behind rate limits and budgets, and the two places they live.

Every request is admitted against a list of ``Check``s at once (its token's, or JWT subject's,
and its model's), all or none:

- ``rate`` (requests or tokens per minute): GCRA, the generic cell rate algorithm. Each key holds
  one number, its theoretical arrival time (TAT); a request of ``cost`` units moves it forward by
  ``cost x window / limit`` from ``max(TAT, now)``, and is admitted when the TAT then lies at most
  one window ahead of now. So a limit of 100 a minute admits a burst of 100, then one every 0.6 s:
  a sliding minute with no boundary to game, in constant memory. Remaining units are
  ``(window - (TAT - now)) x limit / window``; the reset is ``TAT - now``.
- ``budget`` (tokens per UTC day or month): a counter per period, admitted while the used tokens
  plus the cost fit the budget.
- ``concurrency``: the set of requests in flight (each with its deadline, so that one lost with
  its process expires), admitted while smaller than the limit.

Token counts are estimated at admission and reconciled when the answer ends (``adjust``): the
difference moves the TAT, or the period's counter.

``MemoryCounters``: one process, exact (one event loop: nothing interleaves). ``RedisCounters``
(``redis_counters.py``): one Lua script checks and applies every counter of a request atomically,
with the Redis server's clock, so every replica sees the same counts.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Literal, NamedTuple

Kind = Literal["rate", "budget", "concurrency"]


class Check(NamedTuple):
    key: str
    kind: Kind
    limit: int
    # Units this request takes (requests: 1; tokens: the estimate).
    cost: int
    # rate: the window in seconds; budget: seconds until the period turns (the key's lifetime);
    # concurrency: seconds the request may stay in flight at most.
    seconds: float


class State(NamedTuple):
    """One counter after a decision: what is left and when it is whole again (seconds)."""

    remaining: int
    reset: float


class Decision(NamedTuple):
    admitted: bool
    # Per check, in order (admitted); empty when refused.
    states: tuple[State, ...] = ()
    # Refused: the index of the check that refused, and when to retry (seconds).
    refused: int = -1
    retry_after: float = 0.0


class Counters(ABC):
    @abstractmethod
    async def admit(self, checks: list[Check], lease: str) -> Decision:
        """Admit against every check or none; ``lease`` names the request in concurrency sets."""

    @abstractmethod
    def adjust_now(self, checks: list[Check], deltas: list[int]) -> None:
        """Add ``deltas`` (actual minus estimated units) to rate and budget counters (done, or
        queued to be sent: the caller does not wait)."""

    @abstractmethod
    def release_now(self, keys: list[str], lease: str) -> None:
        """The request left: remove it from these concurrency sets (done, or queued)."""

    @abstractmethod
    async def peek(self, checks: list[Check]) -> list[State]:
        """What is left of each counter now, without taking anything."""

    async def close(self) -> None:
        return None


def rate_state(tat: float, now: float, limit: int, window: float) -> State:
    ahead = max(0.0, tat - now)
    return State(max(0, math.floor((window - ahead) * limit / window + 1e-9)), ahead)


class MemoryCounters(Counters):
    """The counters of one process (see the module's docstring)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._tat: dict[str, float] = {}
        self._used: dict[str, tuple[float, int]] = {}  # key -> (expires at, tokens)
        self._leases: dict[str, dict[str, float]] = {}
        self._now = clock or time.time

    def _used_of(self, key: str, now: float) -> int:
        entry = self._used.get(key)
        if entry is None or entry[0] <= now:
            return 0
        return entry[1]

    async def admit(self, checks: list[Check], lease: str) -> Decision:
        now = self._now()
        for i, c in enumerate(checks):
            if c.kind == "rate":
                period = c.seconds / c.limit
                new = max(self._tat.get(c.key, 0.0), now) + c.cost * period
                if new - now > c.seconds + 1e-9:
                    return Decision(False, refused=i, retry_after=new - c.seconds - now)
            elif c.kind == "budget":
                if self._used_of(c.key, now) + c.cost > c.limit:
                    return Decision(False, refused=i, retry_after=c.seconds)
            else:
                held = self._leases.setdefault(c.key, {})
                for name in [n for n, until in held.items() if until <= now]:
                    del held[name]
                if len(held) >= c.limit:
                    return Decision(False, refused=i, retry_after=1.0)
        states = []
        for c in checks:
            if c.kind == "rate":
                period = c.seconds / c.limit
                tat = self._tat[c.key] = max(self._tat.get(c.key, 0.0), now) + c.cost * period
                states.append(rate_state(tat, now, c.limit, c.seconds))
            elif c.kind == "budget":
                used = self._used_of(c.key, now) + c.cost
                self._used[c.key] = (now + c.seconds, used)
                states.append(State(max(0, c.limit - used), c.seconds))
            else:
                held = self._leases[c.key]
                held[lease] = now + c.seconds
                states.append(State(c.limit - len(held), 0.0))
        if len(self._tat) > 100_000:
            self._tat = {k: v for k, v in self._tat.items() if v > now}
        return Decision(True, tuple(states))

    async def peek(self, checks: list[Check]) -> list[State]:
        now = self._now()
        out = []
        for c in checks:
            if c.kind == "rate":
                out.append(rate_state(self._tat.get(c.key, 0.0), now, c.limit, c.seconds))
            elif c.kind == "budget":
                out.append(State(max(0, c.limit - self._used_of(c.key, now)), c.seconds))
            else:
                held = self._leases.get(c.key, {})
                out.append(State(max(0, c.limit - sum(1 for t in held.values() if t > now)),
                                 0.0))
        return out

    def adjust_now(self, checks: list[Check], deltas: list[int]) -> None:
        now = self._now()
        for c, delta in zip(checks, deltas, strict=True):
            if not delta:
                continue
            if c.kind == "rate":
                self._tat[c.key] = self._tat.get(c.key, now) + delta * c.seconds / c.limit
            elif c.kind == "budget":
                expires, used = self._used.get(c.key, (now + c.seconds, 0))
                self._used[c.key] = (expires, max(0, used + delta))

    def release_now(self, keys: list[str], lease: str) -> None:
        for key in keys:
            held = self._leases.get(key)
            if held is not None:
                held.pop(lease, None)
                if not held:
                    del self._leases[key]
