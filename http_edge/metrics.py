"""The edge's Prometheus metrics. Labels are bounded: dialect, task, a configured model id (or
"unknown"), status code, and fixed reasons; never a raw path or other user input."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: half the exposition, no value

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0, 300.0)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter(
    "gateway_requests_total", "HTTP requests by dialect, task, model and status code.",
    ["dialect", "task", "model", "code"],
)
REQUEST_DURATION = Histogram(
    "gateway_request_duration_seconds", "Time from request arrival to the last byte sent.",
    ["dialect", "task", "model"], buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "gateway_time_to_first_token_seconds", "Time from request arrival to the first streamed token.",
    ["dialect", "model"], buckets=_LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds",
    "The gateway's own share of a request's time: total minus time spent waiting on the upstream.",
    ["dialect", "task"], buckets=_OVERHEAD_BUCKETS,
)
PROMPT_TOKENS = Counter("gateway_prompt_tokens_total", "Prompt tokens processed.", ["model"])
COMPLETION_TOKENS = Counter("gateway_completion_tokens_total", "Completion tokens generated.",
                            ["model"])
IN_FLIGHT = Gauge("gateway_requests_in_flight", "Requests being served now.", ["dialect"])
ERRORS = Counter("gateway_request_errors_total", "Failed requests by dialect and reason.",
                 ["dialect", "reason"])
