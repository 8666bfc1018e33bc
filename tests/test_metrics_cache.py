"""``gateway_common.metrics.child``: the cached label child is the one ``labels`` gives, and what is
counted through it lands in the right series."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway_common.metrics import child


def test_child_is_the_labelled_child_and_counts_there() -> None:
    registry = CollectorRegistry()
    requests = Counter("t_requests_total", "t", ["dialect", "code"], registry=registry)
    seconds = Histogram("t_seconds", "t", ["dialect"], registry=registry, buckets=(0.1, 1.0))
    assert child(requests, "openai", "200") is requests.labels("openai", "200")
    assert child(requests, "openai", "200") is child(requests, "openai", "200")
    assert child(requests, "openai", "404") is not child(requests, "openai", "200")
    child(requests, "openai", "200").inc()
    child(requests, "openai", "200").inc(2)
    child(requests, "tgi", "200").inc()
    child(seconds, "openai").observe(0.5)
    value = registry.get_sample_value
    assert value("t_requests_total", {"dialect": "openai", "code": "200"}) == 3
    assert value("t_requests_total", {"dialect": "tgi", "code": "200"}) == 1
    assert value("t_seconds_bucket", {"dialect": "openai", "le": "1.0"}) == 1
    assert value("t_seconds_bucket", {"dialect": "openai", "le": "0.1"}) == 0
