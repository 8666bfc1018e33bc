"""``http_edge/aiohttp_internals.py`` against the installed aiohttp: a held-headers response sends
its status line and headers in the same socket write as its first body bytes."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from http_edge.aiohttp_internals import HeldHeadersResponse, holds_headers
from tests.fakes.loopback import serve_app
from tests.test_sse_relay import record_writes


async def test_headers_leave_with_the_first_write() -> None:
    assert holds_headers()  # the aiohttp this project installs knows the attribute
    writes: list[bytes] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = HeldHeadersResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(b"first")
        await resp.write_eof(b"last")
        return resp

    app = web.Application()
    app.router.add_get("/", handler)
    app.on_response_prepare.append(record_writes(writes))
    runner, port = await serve_app(app)
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/") as r:
            assert await r.read() == b"firstlast"
    finally:
        await runner.cleanup()
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"first" in body
