"""Stage timeouts (SPEC §10): connect, response headers, first token and idle between chunks fire
on time, answer 504 before the first byte (the error event after) and cancel the upstream; the
request's own deadline is met within 100 ms."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.conftest import GatewayFactory
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.traffic.conftest import Replicas, chat, config, model


async def _disconnected(fake: FaultyUpstream) -> bool:
    """Whether the fake saw its client leave (polled: the close travels over loopback)."""
    for _ in range(100):
        if fake.disconnects:
            return True
        await asyncio.sleep(0.01)
    return False


def _error_event(body: bytes) -> dict[str, object]:
    frames = [f[6:] for f in body.split(b"\n\n") if f.startswith(b"data: {")]
    last: dict[str, object] = orjson.loads(frames[-1])
    return last


@pytest.mark.parametrize(("fault", "stage", "stream"), [
    ("slow_headers", "headers", False),
    ("slow_headers", "headers", True),
    ("slow_first_token", "first_token", True),
])
async def test_a_stage_timeout_answers_504_before_the_first_byte(
        replicas: Replicas, gateway_factory: GatewayFactory, fault: str, stage: str,
        stream: bool) -> None:
    (a,) = await replicas(fault, delay=5.0)
    gw = await gateway_factory(config(model("m", a.base_url, timeouts={stage: 0.3})))
    started = time.monotonic()
    status, headers, body = await chat(gw, "m", stream=stream)
    took = time.monotonic() - started
    assert status == 504, body
    assert 0.3 <= took < 0.6, took
    assert f"timeouts.{stage}" in orjson.loads(body)["error"]["message"]
    assert headers["x-gateway-attempts"] == "1"
    assert await _disconnected(a)


async def test_an_idle_stream_ends_with_an_error_event_and_cancels_the_upstream(
        replicas: Replicas, gateway_factory: GatewayFactory) -> None:
    (a,) = await replicas("stall", delay=5.0)
    gw = await gateway_factory(config(model("m", a.base_url, timeouts={"idle": 0.3})))
    started = time.monotonic()
    status, _, body = await chat(gw, "m", stream=True)
    assert status == 200
    assert time.monotonic() - started < 0.8
    text = "".join(c["delta"].get("content") or "" for f in body.split(b"\n\n")
                   if f.startswith(b"data: {") and b'"choices"' in f
                   for c in orjson.loads(f[6:])["choices"])
    assert text == "a says"
    event = _error_event(body)
    assert "timeouts.idle" in str(event["error"])
    assert body.endswith(b"data: [DONE]\n\n")
    assert await _disconnected(a)


@pytest.mark.parametrize("stream", [False, True])
async def test_the_deadline_is_met_within_100_ms(
        replicas: Replicas, gateway_factory: GatewayFactory, stream: bool) -> None:
    (a,) = await replicas("slow_headers", delay=5.0)
    gw = await gateway_factory(config(model("m", a.base_url)))
    started = time.monotonic()
    status, _, _ = await chat(gw, "m", stream=stream, headers={"OICM-Request-Timeout": "1"})
    took = time.monotonic() - started
    assert status == 504
    assert 1.0 <= took < 1.1, took
    assert await _disconnected(a)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A loopback port whose accept queue is full: a new connection waits, unanswered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    try:
        yield port
    finally:
        for c in fillers:
            c.close()
        server.close()


async def test_a_connect_timeout_moves_on_to_the_next_endpoint(
        replicas: Replicas, gateway_factory: GatewayFactory, blackhole: int) -> None:
    (b,) = await replicas("ok")
    gw = await gateway_factory(config(model("m", f"http://127.0.0.1:{blackhole}/v1", b.base_url,
                                            timeouts={"connect": 0.3})))
    started = time.monotonic()
    status, headers, body = await chat(gw, "m")
    assert status == 200, body
    assert headers["x-gateway-attempts"] == "2"
    assert 0.3 <= time.monotonic() - started < 0.8
