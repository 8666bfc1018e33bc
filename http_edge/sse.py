"""Server-sent events, in one place: headers, ``data:`` frames, keepalive comments, and the relay
that turns a gRPC server stream into an SSE response.

The relay waits for the first message before answering, so that a call that fails at once gets a
plain HTTP error with the right status; after that, a failure becomes the dialect's error event.
A client that goes away (a failed write, or the handler cancelled by aiohttp) cancels the gRPC
call, which cancels the upstream request in the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Protocol

from aiohttp import web
from grpc import aio

from gateway_common.core_api import Req, ServerStream
from http_edge.aiohttp_internals import HeldHeadersResponse
from http_edge.errors import from_rpc_error
from http_edge.routing import note_served, note_trailers
from http_edge.state import CORE, STARTED, STATE, Dialect

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
KEEPALIVE = b": keepalive\n\n"
DONE = b"data: [DONE]\n\n"


class EventStream(HeldHeadersResponse):
    """An SSE response whose headers leave with its first frame, in one write.

    The relay prepares the response only once the first message is in hand, so holding the
    headers back delays nothing; the client gets headers and first token in one packet instead of
    two sends.
    """


def frame(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


class StreamEncoder(Protocol):
    """A dialect's per-request conversion of stream messages to SSE bytes."""

    def encode(self, message: Any) -> bytes:
        """The frames for one core message (may be empty)."""

    def end(self) -> bytes:
        """The frames that close a successful stream (e.g. ``data: [DONE]``)."""


class _Keepalive:
    """Writes a comment when the stream has been idle for ``interval`` seconds.

    A timer rather than a task: most streams end before it ever fires, and a task per stream
    (created, then cancelled) costs more than the stream's own bookkeeping.
    """

    def __init__(self, resp: web.StreamResponse, interval: float) -> None:
        self.resp = resp
        self.interval = interval
        self.last = time.monotonic()
        self.loop = asyncio.get_running_loop()
        self.timer = self.loop.call_later(interval, self._check)
        self.writing: asyncio.Task[None] | None = None

    def _check(self) -> None:
        idle = time.monotonic() - self.last
        if idle >= self.interval:
            if self.writing is None or self.writing.done():
                self.writing = self.loop.create_task(self._write())
            idle = 0.0
        self.timer = self.loop.call_later(self.interval - idle, self._check)

    async def _write(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.resp.write(KEEPALIVE)
            self.last = time.monotonic()

    def stop(self) -> None:
        self.timer.cancel()
        if self.writing is not None:
            self.writing.cancel()


async def relay(
    request: web.Request,
    rpc: ServerStream[Req, Any],
    message: Req,
    encoder: StreamEncoder,
    dialect: Dialect,
    *,
    keepalive_seconds: float = 15.0,
) -> web.StreamResponse:
    """Call a streaming RPC for ``request`` and relay its messages as SSE."""
    core, state = request.app[CORE], request[STATE]
    stream = core.api.stream(rpc, message, core.options(request))
    resp: EventStream | None = None
    keepalive: _Keepalive | None = None
    try:
        # Leaving this block early (the client left: a failed write or a cancelled handler)
        # cancels the call.
        async with stream as messages:
            try:
                first: Any = await messages.__anext__()
            except StopAsyncIteration:
                first = None
            resp = EventStream(status=200, headers=SSE_HEADERS)
            resp.headers["X-Request-Id"] = state.request_id
            note_served(state, stream.initial_metadata())
            state.served_headers(resp.headers)
            await resp.prepare(request)
            keepalive = _Keepalive(resp, keepalive_seconds)
            if first is not None:
                await resp.write(encoder.encode(first))
                state.ttft = time.perf_counter() - request[STARTED]
                keepalive.last = time.monotonic()
                async for item in messages:
                    await resp.write(encoder.encode(item))
                    keepalive.last = time.monotonic()
        tail = encoder.end()
        note_trailers(state, stream.trailing_metadata())
    except aio.AioRpcError as exc:
        note_trailers(state, tuple(exc.trailing_metadata() or ()))
        err = from_rpc_error(exc)
        if resp is None:  # before the answer started: a plain HTTP error
            raise err from None
        state.error_reason = err.reason
        tail = dialect.stream_error(err, state.request_id)
    finally:
        if keepalive is not None:
            keepalive.stop()
    await resp.write_eof(tail)  # the last frames and the end of the body in one write
    return resp
