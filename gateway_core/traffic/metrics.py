"""The traffic layer's Prometheus metrics. Labels are bounded: configured model ids, endpoint
labels (host:port of a configured URL), priority classes, outcomes.

What changes on every request (requests in flight per endpoint and per priority class, queued
requests, whether an endpoint is up) is read from the live pools when ``/metrics`` is scraped
(``TrafficCollector``), so that the request path only updates plain integers.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway_common.config import PRIORITIES

if TYPE_CHECKING:
    from gateway_core.traffic.pool import Pool

ATTEMPTS = Counter("gateway_upstream_attempts_total",
                   "Attempts on upstream endpoints, by outcome (ok, error, timeout, "
                   "rate_limited, rejected, cancelled)", ["model", "endpoint", "outcome"])
RETRIES = Counter("gateway_retries_total", "Attempts after a request's first", ["model"])
RETRY_BUDGET_EXHAUSTED = Counter(
    "gateway_retry_budget_exhausted_total",
    "Retries not made because the pool's retry budget was spent", ["model"])
FALLBACKS = Counter("gateway_fallbacks_total",
                    "Requests served (or tried) by a fallback model", ["model", "fallback"])
EJECTIONS = Counter("gateway_upstream_ejections_total", "Endpoints ejected after failures",
                    ["model", "endpoint"])
SHED = Counter("gateway_shed_requests_total",
               "Requests refused by admission control (queue full, shed, waited too long)",
               ["model", "priority", "why"])
RESUMED = Counter("gateway_resumed_streams_total",
                  "Streams continued on another endpoint after a failure mid-stream", ["model"])

POOLS: weakref.WeakSet[Pool] = weakref.WeakSet()


class TrafficCollector(Collector):
    """Gauges read from the live pools at scrape time."""

    def describe(self) -> Iterator[Metric]:
        return self._families()

    def _families(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("gateway_upstream_up",
                               "1 when the endpoint takes requests, 0 when ejected, probing or "
                               "failing its checks", labels=["model", "endpoint"])
        in_flight = GaugeMetricFamily("gateway_upstream_in_flight",
                                      "Requests in flight on an endpoint",
                                      labels=["model", "endpoint"])
        admitted = GaugeMetricFamily("gateway_admitted_requests",
                                     "Requests holding a slot on a model, by priority class",
                                     labels=["model", "priority"])
        queued = GaugeMetricFamily("gateway_queued_requests",
                                   "Requests waiting for a slot on a model, by priority class",
                                   labels=["model", "priority"])
        yield from (up, in_flight, admitted, queued)

    def collect(self) -> Iterator[Metric]:
        up, in_flight, admitted, queued = self._families()
        t = time.monotonic()
        seen: set[tuple[str, str]] = set()
        for pool in list(POOLS):
            for e in pool.endpoints:
                if (pool.model, e.label) in seen:
                    continue  # another gateway in this process with the same model
                seen.add((pool.model, e.label))
                up.add_metric([pool.model, e.label], 1.0 if e.state(t) == "up" else 0.0)
                in_flight.add_metric([pool.model, e.label], float(e.outstanding))
            gate = pool.admission
            for i, name in enumerate(PRIORITIES):
                admitted.add_metric([pool.model, name], float(gate.admitted[i]))
                queued.add_metric([pool.model, name], float(gate.waiting[i]))
        yield from (up, in_flight, admitted, queued)


REGISTRY.register(TrafficCollector())
