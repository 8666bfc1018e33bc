"""A model's pool of upstream endpoints: their health, and the choice of one for an attempt.

Each ``Endpoint`` wraps the provider built for its URL and keeps what the choice needs: requests
in flight, consecutive failures, an ejection deadline, and the load its own metrics report.
Health is passive (Envoy's outlier detection): ``consecutive_failures`` connect errors, 5xx or
timeouts in a row eject the endpoint for ``ejection_seconds``, doubling with each ejection up to
``max_ejection_seconds``; when the time is up one probe request is let through, and its outcome
decides. Active checks (``poller.py``) eject and restore endpoints too.

The balancers pick among the endpoints that are up, have room under their ``max_concurrency``
and were not tried yet for the request.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import urlsplit

from gateway_common.config import (
    HealthConfig,
    ModelConfig,
    RetryConfig,
    TimeoutsConfig,
    UpstreamConfig,
)
from gateway_common.metrics import child
from gateway_core.errors import NoHealthyUpstream, retry_after_fields
from gateway_core.providers.base import Provider
from gateway_core.traffic import metrics
from gateway_core.traffic.admission import Admission

log = logging.getLogger(__name__)


def endpoint_label(url: str) -> str:
    """An endpoint's name in metrics, logs and the admin listing: host and port, no
    credentials, no path (bounded: one per configured endpoint)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host:
        return "local"  # a provider with no upstream (mock)
    return f"{host}:{parts.port}" if parts.port else host


class Endpoint:
    """One upstream URL of a pool and its state (see the module's docstring)."""

    __slots__ = ("checked_down", "config", "ejected_until", "ejections", "failures", "label",
                 "load", "outstanding", "probing", "provider", "weight")

    def __init__(self, config: UpstreamConfig, provider: Provider) -> None:
        self.config = config
        self.provider = provider
        self.label = endpoint_label(config.url)
        self.weight = config.weight
        self.outstanding = 0
        self.failures = 0  # consecutive
        self.ejections = 0  # in a row, for the growing backoff
        self.ejected_until = 0.0  # time.monotonic()
        self.probing = False  # one probe request is out
        self.checked_down = False  # the active check failed
        self.load: float | None = None  # from its metrics (least_loaded); None: unknown

    def up(self, now: float) -> bool:
        """Whether it takes requests now (an ejected endpoint whose time is up takes one probe)."""
        if self.checked_down:
            return False
        if self.ejected_until == 0.0:
            return True
        return now >= self.ejected_until and not self.probing

    def has_room(self) -> bool:
        cap = self.config.max_concurrency
        return cap == 0 or self.outstanding < cap

    def state(self, now: float) -> str:
        if self.checked_down:
            return "down"
        if self.ejected_until == 0.0:
            return "up"
        return "probing" if now >= self.ejected_until else "ejected"

    def begin(self, now: float) -> None:
        self.outstanding += 1
        if self.ejected_until and now >= self.ejected_until:
            self.probing = True

    def succeeded(self) -> None:
        self.outstanding -= 1
        self.failures = 0
        if self.ejected_until:
            log.info("upstream %s is back", self.label)
        self.ejected_until = 0.0
        self.ejections = 0
        self.probing = False

    def failed(self, health: HealthConfig, now: float) -> bool:
        """Count a failure; True when it ejects the endpoint."""
        self.outstanding -= 1
        self.failures += 1
        if self.probing or self.failures >= health.consecutive_failures:
            self.probing = False
            self.ejections += 1
            seconds = min(health.ejection_seconds * 2 ** (self.ejections - 1),
                          health.max_ejection_seconds)
            self.ejected_until = now + seconds
            self.failures = 0
            log.warning("upstream %s ejected for %.1f s after repeated failures", self.label,
                        seconds)
            return True
        return False

    def neutral(self) -> None:
        """The attempt ended saying nothing of the endpoint's health (a caller who left, a
        client error)."""
        self.outstanding -= 1
        self.probing = False


class RetryBudget:
    """Retries allowed as a share of requests: each request adds ``budget_percent`` / 100 of a
    retry, each retry spends one, and the balance never exceeds what a burst may use (Envoy's
    retry budget, counted without a window)."""

    __slots__ = ("balance", "cap", "share")

    def __init__(self, config: RetryConfig) -> None:
        self.share = config.budget_percent / 100.0
        self.cap = float(max(config.min_retries, 1) + 100 * self.share)
        self.balance = float(config.min_retries)

    def request(self) -> None:
        self.balance = min(self.cap, self.balance + self.share)

    def try_spend(self) -> bool:
        if self.balance >= 1.0:
            self.balance -= 1.0
            return True
        return False


class Balancer(Protocol):
    def pick(self, candidates: Sequence[Endpoint], key: str | None) -> Endpoint: ...


class LeastOutstanding:
    """The endpoint with the fewest requests in flight per unit of weight; ties broken at
    random, so that equal endpoints share the load."""

    def pick(self, candidates: Sequence[Endpoint], key: str | None) -> Endpoint:
        if len(candidates) == 1:
            return candidates[0]
        best = min(e.outstanding / e.weight for e in candidates)
        return random.choice([e for e in candidates if e.outstanding / e.weight == best])


class RoundRobin:
    """Smooth weighted round robin (nginx's): each endpoint gets its weight's share, spread."""

    def __init__(self) -> None:
        self.current: dict[int, float] = {}

    def pick(self, candidates: Sequence[Endpoint], key: str | None) -> Endpoint:
        total = 0.0
        best: Endpoint | None = None
        for e in candidates:
            value = self.current.get(id(e), 0.0) + e.weight
            self.current[id(e)] = value
            total += e.weight
            if best is None or value > self.current[id(best)]:
                best = e
        assert best is not None
        self.current[id(best)] -= total
        return best


class LeastLoaded:
    """The endpoint whose own metrics report the least load (waiting requests first, then
    running, then KV-cache use), plus the gateway's own requests in flight since the last
    poll. An endpoint with no metrics yet counts as busy, not idle."""

    def pick(self, candidates: Sequence[Endpoint], key: str | None) -> Endpoint:
        def score(e: Endpoint) -> float:
            return (e.load if e.load is not None else 1e6) + e.outstanding / e.weight

        best = min(score(e) for e in candidates)
        return random.choice([e for e in candidates if score(e) == best])


class PrefixAffinity:
    """Requests whose prompts start alike go to the same endpoint, so its prefix cache hits:
    consistent hashing of the prompt's first characters over a ring of virtual nodes, with
    bounded load (an endpoint with more than ceil(1.25 x the mean of requests in flight) + 1 passes
    the request on to the next on the ring)."""

    VNODES = 64
    BOUND = 1.25

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        ring: list[tuple[int, int]] = []
        for i, e in enumerate(endpoints):
            for v in range(self.VNODES * e.weight):
                ring.append((_hash(f"{e.config.url}#{v}"), i))
        ring.sort()
        self.points = [p for p, _ in ring]
        self.owners = [i for _, i in ring]
        self.endpoints = list(endpoints)
        self.fallback = LeastOutstanding()

    def pick(self, candidates: Sequence[Endpoint], key: str | None) -> Endpoint:
        if key is None or len(candidates) == 1:
            return self.fallback.pick(candidates, key)
        allowed = {id(e) for e in candidates}
        total = sum(e.outstanding for e in self.endpoints) + 1
        # (one more than the ceiling, so that a few requests in flight do not spill)
        bound = math.ceil(self.BOUND * total / len(self.endpoints)) + 1
        start = bisect.bisect(self.points, _hash(key))
        first: Endpoint | None = None
        for step in range(len(self.points)):
            e = self.endpoints[self.owners[(start + step) % len(self.points)]]
            if id(e) not in allowed:
                continue
            if first is None:
                first = e
            if e.outstanding + 1 <= bound:
                return e
        assert first is not None
        return first


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def make_balancer(model: ModelConfig, endpoints: Sequence[Endpoint]) -> Balancer:
    if model.balance == "round_robin":
        return RoundRobin()
    if model.balance == "least_loaded":
        return LeastLoaded()
    if model.balance == "prefix_affinity":
        return PrefixAffinity(endpoints)
    return LeastOutstanding()


def now() -> float:
    return time.monotonic()


class Pool:
    """A model's endpoints with its balancer, retry budget, admission gate and stage timeouts.

    ``healthy`` (every endpoint up) and ``capped`` (some endpoint has a concurrency cap) let the
    usual request skip the general checks: they are recomputed when an endpoint's state changes,
    which is rare.
    """

    def __init__(self, config: ModelConfig, endpoints: list[Endpoint],
                 defaults: TimeoutsConfig) -> None:
        self.model = config.id
        self.config = config
        self.endpoints = endpoints
        self.health = config.health
        self.retries = config.retries
        self.budget = RetryBudget(config.retries)
        self.balancer = make_balancer(config, endpoints)
        self.capped = any(e.config.max_concurrency for e in endpoints)
        self.healthy = True
        self.single = endpoints[0] if len(endpoints) == 1 else None
        # Unary chat and completion requests are streamed from its upstreams and assembled.
        self.via_stream = all(e.provider.unary_via_stream for e in endpoints)
        self.admission = Admission(config.id, config.max_concurrency, config.queue_timeout,
                                   config.max_queued, self._has_room)
        t = config.timeouts
        self.connect = t.connect if t.connect is not None else defaults.connect
        self.headers = t.headers if t.headers is not None else defaults.headers
        self.first_token = t.first_token if t.first_token is not None else defaults.first_token
        self.idle = t.idle if t.idle is not None else defaults.idle
        metrics.POOLS.add(self)

    def _has_room(self) -> bool:
        if not self.capped:
            return True
        t = now()
        up = [e for e in self.endpoints if e.up(t)]
        return not up or any(e.has_room() for e in up)

    def check_up(self) -> None:
        """Raise NoHealthyUpstream, with the wait until an endpoint may be tried, when none is
        up."""
        if self.healthy:
            return
        t = now()
        if any(e.up(t) for e in self.endpoints):
            return
        waits = [e.ejected_until - t for e in self.endpoints
                 if not e.checked_down and e.ejected_until > t]
        wait = min(waits) if waits else self.health.check_seconds
        raise NoHealthyUpstream(f"model '{self.model}' has no healthy upstream; retry in "
                                f"{max(1, int(wait + 0.999))} s",
                                fields=retry_after_fields(wait))

    def pick(self, tried: Sequence[Endpoint], key: str | None) -> Endpoint | None:
        """An endpoint for the next attempt, among those up and not tried yet (with room under
        their caps when one has it); None when none is left."""
        if self.healthy and not self.capped:
            if self.single is not None:
                return None if tried else self.single
            fresh = [e for e in self.endpoints if e not in tried] if tried else self.endpoints
            return self.balancer.pick(fresh, key) if fresh else None
        t = now()
        fresh = [e for e in self.endpoints if e not in tried and e.up(t)]
        if not fresh:
            return None
        roomy = [e for e in fresh if e.has_room()]
        return self.balancer.pick(roomy or fresh, key)

    def begin(self, e: Endpoint) -> None:
        if e.ejected_until:
            e.begin(now())
        else:
            e.outstanding += 1

    def end(self, e: Endpoint, outcome: str) -> None:
        """Close an attempt: ``ok``, ``failed`` (counts against its health) or ``neutral``."""
        if outcome == "ok":
            if e.ejected_until or e.failures:
                e.succeeded()
                self.changed()
            else:
                e.outstanding -= 1
        elif outcome == "failed":
            if e.failed(self.health, now()):
                child(metrics.EJECTIONS, self.model, e.label).inc()
                self.changed()
        else:
            e.neutral()
        if self.admission.queued:
            self.admission.wake()

    def close(self) -> None:
        """The pool is no longer served (its registry closed): its gauges leave /metrics."""
        metrics.POOLS.discard(self)

    def changed(self) -> None:
        """An endpoint was ejected, came back, or changed its check result."""
        self.healthy = all(not e.ejected_until and not e.checked_down for e in self.endpoints)
