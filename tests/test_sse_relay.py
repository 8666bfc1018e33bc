"""The edge's SSE relay (``http_edge/sse.relay``) with a short keepalive interval: comments are
written while the upstream is idle, never into a busy stream, and the stream still ends cleanly."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web

from http_edge.app import create_app
from http_edge.dialects import openai_wire as wire
from http_edge.dialects.openai import OPENAI
from http_edge.routing import add_routes
from http_edge.sse import KEEPALIVE, relay
from http_edge.state import CORE, STATE
from inference_gateway.v1 import inference_pb2 as pb
from tests.conftest import Gateway
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

KEEPALIVE_SECONDS = 0.05
WRITES = web.AppKey("writes", list)


async def slow_stream(request: web.Request) -> web.StreamResponse:
    """A chat stream from the fake's slow model, relayed with a short keepalive interval."""
    core = request.app[CORE]
    model = request.query["model"]
    req = pb.ChatRequest(model=model, messages=[pb.ChatMessage(role="user", content="hi")])
    req.params.max_tokens = 2
    call = core.inference.ChatStream(req, timeout=10)
    return await relay(request, call, wire.ChatEncoder(request[STATE], False), OPENAI,
                       keepalive_seconds=KEEPALIVE_SECONDS)


async def counted_stream(request: web.Request) -> web.StreamResponse:
    """The same stream, recording every write the response makes to its socket."""
    transport = request.transport
    assert transport is not None
    writes = request.app[WRITES]
    write, writelines = transport.write, transport.writelines

    def counted(data: Any) -> None:
        writes.append(bytes(data))
        write(data)

    def counted_lines(chunks: Any) -> None:
        writes.append(b"".join(chunks))
        writelines(chunks)

    transport.write = counted  # type: ignore[method-assign]
    transport.writelines = counted_lines  # type: ignore[method-assign,assignment]
    return await slow_stream(request)


async def relayed(gateway: Gateway, model: str, path: str = "/test/slow",
                  writes: list[bytes] | None = None) -> bytes:
    app = create_app(gateway.config, core_address=gateway.grpc_target)
    app[WRITES] = [] if writes is None else writes
    add_routes(app, OPENAI, [("GET", "/test/slow", slow_stream),
                             ("GET", "/test/counted", counted_stream)])
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{port}{path}", params={"model": model}
        ) as resp:
            assert resp.status == 200
            return await resp.read()
    finally:
        await runner.cleanup()


async def test_keepalive_comments_while_the_upstream_is_idle(
    gateway: Gateway, upstream: FakeOpenAI
) -> None:
    upstream.slow_seconds = 0.3  # between tokens: several keepalive intervals
    body = await relayed(gateway, "fake-slowstream")
    assert body.endswith(b"data: [DONE]\n\n")
    frames = body.split(b"\n\n")
    data = [f for f in frames if f.startswith(b"data: {")]
    assert b"".join(data).count(b'"content"') >= 2
    # Comments between the data frames, each a whole frame of its own.
    assert body.count(KEEPALIVE) >= 3
    assert all(f in (b"", KEEPALIVE.strip(b"\n"), b"data: [DONE]") or f.startswith(b"data: {")
               for f in frames)


async def test_no_keepalive_in_a_busy_stream(gateway: Gateway) -> None:
    body = await relayed(gateway, "fake-chat")
    assert KEEPALIVE not in body
    assert body.endswith(b"data: [DONE]\n\n")
    text = "".join(
        c["delta"].get("content", "")
        for f in body.split(b"\n\n") if f.startswith(b"data: {")
        for c in orjson.loads(f[6:])["choices"]
    )
    assert text == " ".join(REPLY.split(" ")[:2])


async def test_headers_leave_with_the_first_frame(gateway: Gateway, upstream: FakeOpenAI) -> None:
    """The status line and headers go out in the same write as the first frame (one packet to
    the client, not two sends), and every later frame as it comes."""
    upstream.slow_seconds = 0.05  # between tokens: each frame is its own write
    writes: list[bytes] = []
    body = await relayed(gateway, "fake-slowstream", "/test/counted", writes)
    assert body.endswith(b"data: [DONE]\n\n")
    first = writes[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\n" in first and b'data: {"id"' in first.split(b"\r\n\r\n", 1)[1]
    assert len(writes) >= 3  # the first frame, the token after the pause, the end
