"""The traffic layer's Prometheus metrics. Labels are bounded: configured model ids, endpoint
labels (host:port of a configured URL), priority classes, outcomes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

UPSTREAM_UP = Gauge("gateway_upstream_up",
                    "1 when the endpoint takes requests, 0 when ejected or failing its checks",
                    ["model", "endpoint"])
UPSTREAM_IN_FLIGHT = Gauge("gateway_upstream_in_flight",
                           "Requests in flight on an endpoint", ["model", "endpoint"])
ATTEMPTS = Counter("gateway_upstream_attempts_total",
                   "Attempts on upstream endpoints, by outcome (ok, error, timeout, rejected, "
                   "cancelled)", ["model", "endpoint", "outcome"])
RETRIES = Counter("gateway_retries_total", "Attempts after a request's first", ["model"])
RETRY_BUDGET_EXHAUSTED = Counter(
    "gateway_retry_budget_exhausted_total",
    "Retries not made because the pool's retry budget was spent", ["model"])
FALLBACKS = Counter("gateway_fallbacks_total",
                    "Requests served (or tried) by a fallback model", ["model", "fallback"])
EJECTIONS = Counter("gateway_upstream_ejections_total", "Endpoints ejected after failures",
                    ["model", "endpoint"])
QUEUED = Gauge("gateway_queued_requests", "Requests waiting for a slot on a model",
               ["model", "priority"])
ADMITTED = Gauge("gateway_admitted_requests", "Requests holding a slot on a model",
                 ["model", "priority"])
SHED = Counter("gateway_shed_requests_total",
               "Requests refused by admission control (queue full, shed, waited too long)",
               ["model", "priority", "why"])
