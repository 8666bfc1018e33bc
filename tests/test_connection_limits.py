"""Slow and idle clients are cut off; the connection cap holds; streams and health go on.

Timeouts are set to about a second here; every bound asserted is generous (a loaded 2-core
machine), and nothing waits with a bare sleep for something that can be awaited.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway_common.config import parse_config
from tests.conftest import Gateway, base_config, start_gateway
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.raw_http import split

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
CHAT = b'{"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}'
SLACK = 8.0  # seconds a cut may come late on a loaded machine
Factory = Callable[[dict[str, Any]], Awaitable[Gateway]]


def limits(**overrides: Any) -> dict[str, Any]:
    return {"header_timeout_seconds": 1.0, "body_timeout_seconds": 1.0,
            "body_min_rate_bytes": 1000, "keepalive_timeout_seconds": 1.0, **overrides}


@pytest.fixture
async def local_factory() -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Gateway]]]:
    """Gateways with the core in process only: connection handling is the edge's alone."""
    started: list[Gateway] = []

    async def factory(data: dict[str, Any]) -> Gateway:
        started.append(await start_gateway(parse_config(data)))
        return started[-1]

    yield factory
    for gw in started:
        await gw.stop()


@pytest.fixture
async def gw(upstream: FakeOpenAI, local_factory: Factory) -> Gateway:
    return await local_factory(base_config(upstream.base_url, limits=limits()))


async def open_conn(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.edge.port)


async def until_closed(reader: asyncio.StreamReader, within: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    chunks = []
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks), time.monotonic() - started


async def test_a_half_sent_head_is_cut_at_the_header_timeout(gw: Gateway) -> None:
    reader, writer = await open_conn(gw)
    writer.write(HEAD + b"Authorization: Bearer igw_half")
    answer, took = await until_closed(reader, 1.0 + SLACK)
    writer.close()
    assert took >= 0.8, took
    status, _, body = split(answer)
    assert status == 408 and b"igw_half" not in answer and b"did not arrive" in body


async def test_a_trickled_head_is_cut_at_the_header_timeout(gw: Gateway) -> None:
    reader, writer = await open_conn(gw)
    started = time.monotonic()

    async def trickle() -> None:
        for byte in HEAD + b"X-Slow: " + b"a" * 200:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.05)

    task = asyncio.create_task(trickle())
    answer, _ = await until_closed(reader, 1.0 + SLACK)
    task.cancel()
    writer.close()
    assert time.monotonic() - started < 1.0 + SLACK
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_connection_that_sends_nothing_is_closed(gw: Gateway) -> None:
    reader, writer = await open_conn(gw)
    answer, took = await until_closed(reader, 1.0 + SLACK)
    writer.close()
    assert answer == b"" and took >= 0.8


async def test_an_idle_keepalive_connection_is_closed(gw: Gateway) -> None:
    reader, writer = await open_conn(gw)
    writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT)
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    rest, took = await until_closed(reader, 1.0 + SLACK)
    writer.close()
    assert rest == b"" and took >= 0.5


async def test_a_slow_body_is_cut_and_a_fast_one_is_not(gw: Gateway) -> None:
    reader, writer = await open_conn(gw)
    writer.write(HEAD + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
    started = time.monotonic()

    async def trickle() -> None:
        while True:  # 50 bytes/s, far under the 1000 bytes/s asked for
            writer.write(b" " * 10)
            await asyncio.sleep(0.2)

    task = asyncio.create_task(trickle())
    await until_closed(reader, 2.0 + SLACK)
    task.cancel()
    writer.close()
    assert time.monotonic() - started >= 0.8
    async with aiohttp.ClientSession() as s, s.post(
            gw.http + "/v1/chat/completions", data=CHAT + b" " * 200_000,
            headers={"Content-Type": "application/json"}) as r:
        assert r.status == 200


async def test_a_stream_outlives_every_timeout(gw: Gateway) -> None:
    body = {"model": "fake-endless", "stream": True,
            "messages": [{"role": "user", "content": "go"}]}
    started = time.monotonic()
    events = 0
    async with aiohttp.ClientSession() as s, s.post(
            gw.http + "/v1/chat/completions", json=body) as r:
        assert r.status == 200
        async for line in r.content:
            events += line.startswith(b"data: ")
            if time.monotonic() - started > 2.5:  # past every timeout, twice over
                break
    assert events > 10


async def test_the_connection_cap_holds_and_health_is_still_served(
        upstream: FakeOpenAI, local_factory: Factory) -> None:
    cap = 20
    gw = await local_factory(base_config(upstream.base_url, limits=limits(
        max_connections=cap, header_timeout_seconds=30.0, keepalive_timeout_seconds=30.0)))
    server = gw.edge.runner.server
    assert server is not None
    # A stream in flight, on one of the connections under the cap.
    session = aiohttp.ClientSession()
    stream = await session.post(gw.http + "/v1/chat/completions", json={
        "model": "fake-endless", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert stream.status == 200
    idle = [await open_conn(gw) for _ in range(300)]  # idle: they send nothing
    try:
        # Past the cap (the stream holds one place), each is refused: at once when more arrive,
        # or when its time to send a request is up.
        refused = 0
        for reader, _ in idle[cap - 1:]:
            answer, _ = await until_closed(reader, SLACK)
            refused += answer.startswith(b"HTTP/1.1 503 ")
        assert refused == len(idle) - (cap - 1)
        assert len(server.connections) <= cap + 1
        assert not any(reader.at_eof() for reader, _ in idle[:cap - 1])
        # A health probe on a new connection is still answered; anything else is 503.
        async with aiohttp.ClientSession() as probe:
            async with probe.get(gw.http + "/health") as r:
                assert r.status == 200
            async with probe.get(gw.http + "/v1/models") as r:
                assert r.status == 503 and r.headers["Retry-After"] == "1"
        # The stream in flight goes on.
        for _ in range(5):
            assert (await stream.content.readline()).startswith(b"data: ") or True
        assert not stream.content.at_eof()
    finally:
        stream.close()
        await session.close()
        for _, writer in idle:
            writer.close()


async def test_stray_bytes_during_a_request_do_not_keep_the_connection(
        gw: Gateway, upstream: FakeOpenAI) -> None:
    """Bytes that come while a request is served (a stray CRLF, half of the next head) are timed
    from its end, and the connection closes; the request itself is not cut."""
    upstream.slow_seconds = 2.0  # twice the header timeout
    slow = CHAT.replace(b"mock-chat", b"fake-slow")
    upstream.received.clear()
    reader, writer = await open_conn(gw)
    writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(slow) + slow)
    await writer.drain()
    await asyncio.wait_for(upstream.received.wait(), SLACK)  # it sleeps 2 s from now
    writer.write(b"\r\nGET /he")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    _, took = await until_closed(reader, 1.0 + SLACK)
    writer.close()
    assert took < 1.0 + SLACK


async def test_a_pipelined_body_waiting_behind_a_stream_does_not_cut_it(gw: Gateway) -> None:
    """The next request's body, arrived whole but not read while a stream is served before it,
    is not a slow sender."""
    stream = (b'{"model": "fake-endless", "stream": true, '
              b'"messages": [{"role": "user", "content": "go"}]}')
    reader, writer = await open_conn(gw)
    writer.write(HEAD + b"Content-Length: %d\r\n\r\n" % len(stream) + stream
                 + HEAD + b"Content-Length: %d\r\n\r\n" % len(CHAT) + CHAT)
    started = time.monotonic()
    received = 0
    while time.monotonic() - started < 2.5:  # past the body and header timeouts, twice over
        chunk = await asyncio.wait_for(reader.read(65536), SLACK)
        assert chunk, "the connection was closed under the stream"
        received += len(chunk)
    writer.close()
    assert received > 1000
