"""Prometheus label children, cached.

``metric.labels(...)`` validates its values and takes a lock on every call (about 3 us); the hot
path calls it several times per request with a handful of bounded label sets. ``child`` keeps the
child of each (metric, values) once made: the same object ``labels`` returns, found in a dict.
"""

from __future__ import annotations

from typing import TypeVar

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

_CHILDREN: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def child(metric: M, *values: str) -> M:
    """``metric.labels(*values)``, from a cache (label values must be bounded)."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found  # type: ignore[return-value]
