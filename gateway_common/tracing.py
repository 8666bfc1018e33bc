"""Tracing with OpenTelemetry (optional: ``pip install 'inference-gateway[otel]'``; off unless
``tracing.enabled``), configured by the standard ``OTEL_*`` variables (exporter endpoint,
service name, sampler).

A request's trace: the client's W3C ``traceparent`` (when it sends one) is the parent of the
edge's span (kind SERVER, the HTTP route); the edge passes its span to the core in the call's
metadata (``traceparent``: over gRPC and the in-process channel alike); the core's span (the task
and the model, with the GenAI semantic-convention attributes) is the parent of one span per
upstream attempt (kind CLIENT, ``server.address`` the endpoint), whose context goes to the
upstream as its ``traceparent`` header. Spans are started and ended explicitly (no context is
made current across a stream's yields): what is carried between them is the W3C header.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"

# The tracer when tracing is on; None otherwise (every helper is then a no-op).
_tracer: Any = None
_propagator: Any = None


def enabled() -> bool:
    return _tracer is not None


def setup(on: bool, exporter: Any = None) -> bool:
    """Turn tracing on (with ``exporter``, else the OTLP exporter configured by ``OTEL_*``) or
    off; whether it is on. Without the OpenTelemetry SDK installed it stays off, said once."""
    global _tracer, _propagator
    if not on:
        _tracer = None
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        log.warning("tracing.enabled is set but OpenTelemetry is not installed "
                    "(pip install 'inference-gateway[otel]'): tracing is off")
        return False
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                               "inference-gateway")})
    provider = TracerProvider(resource=resource)
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("the OTLP exporter is not installed (pip install "
                        "'inference-gateway[otel]'): tracing is off")
            return False
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = provider.get_tracer("inference-gateway")
    _propagator = TraceContextTextMapPropagator()
    return True


def _context(traceparent: str | None) -> Any:
    if not traceparent:
        return None
    return _propagator.extract({TRACEPARENT: traceparent})


def start(name: str, traceparent: str | None, kind: str = "INTERNAL",
          attributes: dict[str, Any] | None = None) -> Any:
    """A started span (None when tracing is off), child of ``traceparent`` when given."""
    if _tracer is None:
        return None
    from opentelemetry.trace import SpanKind

    return _tracer.start_span(name, context=_context(traceparent), kind=getattr(SpanKind, kind),
                              attributes=attributes)


def header_of(span: Any) -> str | None:
    """The W3C traceparent naming ``span`` as the parent."""
    if span is None:
        return None
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def trace_id(span: Any) -> str | None:
    if span is None:
        return None
    return f"{span.get_span_context().trace_id:032x}"


def end(span: Any, error: BaseException | None = None, **attributes: Any) -> None:
    if span is None:
        return
    for key, value in attributes.items():
        if value is not None:
            span.set_attribute(key.replace("__", "."), value)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, str(getattr(error, "message", error))[:200]))
        span.set_attribute("error.type", type(error).__name__)
    span.end()
