"""The core's upstream SSE reader (``providers/http.stream_sse``) against a scripted server: events
split anywhere across reads, a last line without its newline, oversized lines, and the connection
going back to the pool when the body ends after ``[DONE]``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from gateway_core.errors import UpstreamError
from gateway_core.providers import http
from gateway_core.providers.base import Call, SessionPool
from tests.fakes.loopback import serve_app

EVENTS = [{"choices": [{"index": 0, "delta": {"content": f"tok{i} é"}}]} for i in range(5)]
BODY = b"".join(b"data: " + orjson.dumps(e) + b"\r\n\r\n" for e in EVENTS)


@dataclass
class Scripted:
    """Writes ``pieces`` one write each; then waits for ``gate`` (if any) before ending the body.
    Records the client's address of every request (one per connection used)."""

    pieces: list[bytes]
    gate: asyncio.Event | None = None
    peers: list[Any] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in self.pieces:
            await resp.write(piece)
        if self.gate is not None:
            await self.gate.wait()
        await resp.write_eof()
        return resp

    async def start(self) -> Scripted:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        return self


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def read_all(session: aiohttp.ClientSession, server: Scripted) -> list[Any]:
    call = Call(deadline=asyncio.get_running_loop().time() + 10)
    return [e async for e in http.stream_sse(session, server.url, call, {"stream": True})]


async def test_events_split_anywhere(session: aiohttp.ClientSession) -> None:
    data = BODY + b"data: [DONE]\n\n"
    server = await Scripted([data[i:i + 7] for i in range(0, len(data), 7)]).start()
    try:
        assert await read_all(session, server) == EVENTS
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


async def test_last_line_without_newline_and_no_done(session: aiohttp.ClientSession) -> None:
    server = await Scripted([BODY, b": a comment\nevent: x\ndata: {\"last\": true}"]).start()
    try:
        assert await read_all(session, server) == [*EVENTS, {"last": True}]
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


async def test_oversized_line_is_a_protocol_error(session: aiohttp.ClientSession) -> None:
    server = await Scripted([b"data: " + b"x" * (http.MAX_EVENT_BYTES + 1)]).start()
    try:
        with pytest.raises(UpstreamError) as info:
            await read_all(session, server)
        assert info.value.kind == "protocol"
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


async def test_connection_reused_when_the_body_ends_after_done(
    session: aiohttp.ClientSession,
) -> None:
    gate = asyncio.Event()
    server = await Scripted([BODY, b"data: [DONE]\n\n"], gate=gate).start()
    try:
        # The stream is over at [DONE]: the reader does not wait for the end of the body.
        assert await read_all(session, server) == EVENTS
        assert not gate.is_set()
        assert len(http.FINISHING) == 1
        gate.set()
        await asyncio.gather(*http.FINISHING)
        assert await read_all(session, server) == EVENTS
        assert server.peers[0] == server.peers[1]  # the same connection, from the pool
    finally:
        assert server.runner is not None
        await server.runner.cleanup()


async def test_upstream_cookies_are_not_kept_across_callers() -> None:
    """The pool's session is shared by every caller of an upstream: a cookie the upstream set in
    one caller's answer (a load balancer's sticky session, a login) must not ride along with the
    next caller's request. Served on ``localhost``: aiohttp's jar ignores cookies of IP hosts."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = web.json_response({"ok": True})
        resp.set_cookie("upstream-session", f"s{len(seen)}", path="/")
        return resp

    app = web.Application()
    app.router.add_post("/v1/x", handle)
    runner, port = await serve_app(app, host="localhost")
    url = f"http://localhost:{port}/v1/x"
    pool = SessionPool()
    try:
        for _ in range(3):
            call = Call(deadline=asyncio.get_running_loop().time() + 10)
            assert await http.request_json(pool.get(url), "POST", url, call, json_body={}) == {
                "ok": True}
    finally:
        await pool.close()
        await runner.cleanup()
    assert seen == [None, None, None]
