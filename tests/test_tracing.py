"""Tracing (SPEC §13) with the OpenTelemetry SDK's in-memory exporter: the client's traceparent
is the parent of the edge's span, the core's span is its child over both core transports, one
span per upstream attempt under the core's (a failed one too), with the GenAI attributes; the
upstream receives the attempt's traceparent; the access log names the trace."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway_common import tracing
from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream

pytest.importorskip("opentelemetry.sdk", reason="the OpenTelemetry SDK is not installed")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup(True, exporter)
    yield exporter
    tracing.setup(False)


async def test_a_request_is_one_trace_from_the_client_to_the_upstream(
        spans: InMemorySpanExporter, gateway_factory: GatewayFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    bad, good = await FaultyUpstream("a", "503").start(), await FaultyUpstream("b", "ok").start()
    try:
        gw = await gateway_factory({"auth": {"enabled": False}, "models": [
            {"id": "m", "task": "chat", "provider": "openai", "balance": "round_robin",
             "upstreams": [{"url": bad.base_url}, {"url": good.base_url}]}]})
        async with aiohttp.ClientSession() as s, s.post(
                gw.http + "/v1/chat/completions",
                headers={"traceparent": f"00-{TRACE}-{PARENT}-01"},
                json={"model": "m", "stream": True,
                      "stream_options": {"include_usage": True},
                      "messages": [{"role": "user", "content": "hi"}]}) as r:
            assert r.status == 200
            await r.read()
        sent = [req for fake in (bad, good) for req in fake.headers_seen]
    finally:
        await bad.stop()
        await good.stop()
    finished = spans.get_finished_spans()
    by_name: dict[str, list[Any]] = {}
    for span in finished:
        by_name.setdefault(span.name, []).append(span)
    assert all(f"{span.context.trace_id:032x}" == TRACE for span in finished)
    (edge,) = by_name["POST /v1/chat/completions"]
    (core,) = by_name["chat m"]
    attempts = by_name["upstream m"]
    assert f"{edge.parent.span_id:016x}" == PARENT
    assert core.parent.span_id == edge.context.span_id
    assert len(attempts) == 2 and all(a.parent.span_id == core.context.span_id
                                      for a in attempts)
    failed, served = sorted(attempts, key=lambda a: a.attributes["gateway.attempt"])
    assert failed.status.status_code.name == "ERROR" and served.status.status_code.name == "UNSET"
    assert {a.attributes["server.address"] for a in attempts} == {
        f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"}
    assert core.attributes["gen_ai.operation.name"] == "chat"
    assert core.attributes["gen_ai.request.model"] == "m"
    assert core.attributes["gen_ai.response.model"] == "m"
    assert core.attributes["gen_ai.usage.input_tokens"] > 0
    assert core.attributes["gen_ai.usage.output_tokens"] > 0
    assert edge.attributes["http.response.status_code"] == 200
    # Each upstream got the traceparent of its own attempt's span.
    parents = {h["traceparent"].split("-")[2] for h in sent}
    assert parents == {f"{a.context.span_id:016x}" for a in attempts}
    assert all(h["traceparent"].split("-")[1] == TRACE for h in sent)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert lines and lines[-1]["trace_id"] == TRACE


def test_tracing_is_off_by_default() -> None:
    assert not tracing.enabled()
    assert tracing.start("x", None) is None and tracing.header_of(None) is None
