"""The edge's SSE relay (``http_edge/sse.relay``) with a short keepalive interval: comments are
written while the upstream is idle, never into a busy stream, and the stream still ends cleanly."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from aiohttp import web

from gateway_common.core_api import CHAT_STREAM
from http_edge.app import create_app
from http_edge.dialects import openai_wire as wire
from http_edge.dialects.openai import OPENAI
from http_edge.routing import add_routes
from http_edge.sse import KEEPALIVE, relay
from http_edge.state import STATE
from inference_gateway.v1 import inference_pb2 as pb
from tests.conftest import Gateway
from tests.fakes.loopback import serve_app
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

KEEPALIVE_SECONDS = 0.05


async def slow_stream(request: web.Request) -> web.StreamResponse:
    """A chat stream from the fake's slow model, relayed with a short keepalive interval."""
    model = request.query["model"]
    req = pb.ChatRequest(model=model, messages=[pb.ChatMessage(role="user", content="hi")])
    req.params.max_tokens = 2
    return await relay(request, CHAT_STREAM, req, wire.ChatEncoder(request[STATE], False), OPENAI,
                       keepalive_seconds=KEEPALIVE_SECONDS)


def record_writes(writes: list[bytes]) -> Any:
    """An ``on_response_prepare`` hook recording every write a response makes to its socket."""

    async def hook(request: web.BaseRequest, response: web.StreamResponse) -> None:
        transport = request.transport
        assert transport is not None
        write, writelines = transport.write, transport.writelines

        def counted(data: Any) -> None:
            writes.append(bytes(data))
            write(data)

        def counted_lines(chunks: Any) -> None:
            writes.append(b"".join(chunks))
            writelines(chunks)

        transport.write = counted  # type: ignore[method-assign]
        transport.writelines = counted_lines  # type: ignore[method-assign,assignment]

    return hook


async def edge(gateway: Gateway, core_transport: str,
               writes: list[bytes] | None = None) -> tuple[web.AppRunner, int]:
    """An edge of its own in front of the gateway's core (over the test's transport), with the
    test route added and, given ``writes``, its socket writes recorded."""
    core = gateway.core.in_process if core_transport == "local" else None
    app = create_app(gateway.config, core_address=gateway.grpc_target, core=core)
    add_routes(app, OPENAI, [("GET", "/test/slow", slow_stream)])
    if writes is not None:
        app.on_response_prepare.append(record_writes(writes))
    return await serve_app(app)


async def relayed(gateway: Gateway, core_transport: str, model: str) -> bytes:
    runner, port = await edge(gateway, core_transport)
    try:
        async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{port}/test/slow", params={"model": model}
        ) as resp:
            assert resp.status == 200
            return await resp.read()
    finally:
        await runner.cleanup()


async def test_keepalive_comments_while_the_upstream_is_idle(
    gateway: Gateway, upstream: FakeOpenAI, core_transport: str
) -> None:
    upstream.slow_seconds = 0.3  # between tokens: several keepalive intervals
    body = await relayed(gateway, core_transport, "fake-slowstream")
    assert body.endswith(b"data: [DONE]\n\n")
    frames = body.split(b"\n\n")
    data = [f for f in frames if f.startswith(b"data: {")]
    assert b"".join(data).count(b'"content"') >= 2
    # Comments between the data frames, each a whole frame of its own.
    assert body.count(KEEPALIVE) >= 3
    assert all(f in (b"", KEEPALIVE.strip(b"\n"), b"data: [DONE]") or f.startswith(b"data: {")
               for f in frames)


async def test_no_keepalive_in_a_busy_stream(gateway: Gateway, core_transport: str) -> None:
    body = await relayed(gateway, core_transport, "fake-chat")
    assert KEEPALIVE not in body
    assert body.endswith(b"data: [DONE]\n\n")
    text = "".join(
        c["delta"].get("content", "")
        for f in body.split(b"\n\n") if f.startswith(b"data: {")
        for c in orjson.loads(f[6:])["choices"]
    )
    assert text == " ".join(REPLY.split(" ")[:2])


async def test_headers_leave_with_the_first_frame(gateway: Gateway, upstream: FakeOpenAI,
                                                  core_transport: str) -> None:
    """On the real chat route: the status line and headers go out in the same write as the first
    frames (one packet to the client, not two sends: the core holds the role-only preamble until
    the first token, which the fake sends at once), and each later token in a write of its own
    as it comes."""
    upstream.slow_seconds = 0.05  # between tokens, far below the 15 s keepalive interval
    writes: list[bytes] = []
    runner, port = await edge(gateway, core_transport, writes)
    try:
        async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "fake-slowstream", "stream": True, "max_tokens": 2,
                  "messages": [{"role": "user", "content": "hi"}]},
        ) as resp:
            assert resp.status == 200
            body = await resp.read()
    finally:
        await runner.cleanup()
    assert body.endswith(b"data: [DONE]\n\n")
    first = writes[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\n\r\n" in first and b'data: {"id"' in first.split(b"\r\n\r\n", 1)[1]
    words = REPLY.split(" ")[:2]
    assert f'"content":"{words[0]}"'.encode() in first
    tokens = [w for w in writes[1:] if b'"content":"' in w and b'"content":""' not in w]
    assert len(tokens) == 1  # the next token after its pause, alone
    assert tokens[0].count(b"data: {") == 1 and words[1].encode() in tokens[0]
