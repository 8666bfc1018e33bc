"""The edge's HTTP connection handling: bounded time, bounded connections, nothing echoed.

aiohttp's ``RequestHandler`` parses each connection's requests. ``EdgeProtocol`` adds what a
server facing the internet needs on top of it:

- **Errors the parser raises** (a bad request line, a header with a control character or past the
  size limit, broken chunking, a body that is not the gzip it claims) are answered in the JSON error
  shape with a fixed message (``logs.PARSER_ERRORS``), never aiohttp's text that quotes the request
  bytes (a header line may hold a token), and logged as one rate-limited line.
- **The request head** must arrive within ``header_timeout_seconds`` of the connection opening or
  of its first byte; a sender that is too slow is closed (with a 408 when part of it arrived).
- **The body** must arrive at ``body_min_rate_bytes`` per second, measured over each window of
  ``body_timeout_seconds``, unless the gateway itself is not reading it (flow control).
- **Idle keep-alive connections** close after ``keepalive_timeout_seconds``.
- **Past ``max_connections``** a new connection is served only its health probe; anything else is
  answered 503 with ``Retry-After`` and the connection closed. At most ``OVERFLOW_ALLOWANCE``
  such connections wait for their request, each for ``OVERFLOW_HEAD_SECONDS``; a new one past that
  refuses the oldest one at once.

None of these timers runs while a request is being handled, so long streams are never cut.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from gateway_common.config import LimitsConfig
from http_edge.logs import ClientErrorLog, describe

SERVER_NAME = "inference-gateway"
HEALTH_PATHS = frozenset({"/health", "/health/live", "/health/ready"})
# Connections over the cap that are still read (for a health probe) at once; more are refused
# without reading, and they get this long to send their request head.
OVERFLOW_ALLOWANCE = 64
OVERFLOW_HEAD_SECONDS = 2.0

_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Payload Too Large",
            500: "Internal Server Error", 503: "Service Unavailable", 504: "Gateway Timeout"}
_CODES = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large",
          417: "expectation_failed", 500: "internal_error", 503: "overloaded", 504: "timeout"}
# Errors aiohttp raises before the app's middlewares run.
OUTSIDE_MESSAGES = {417: "only 'Expect: 100-continue' is supported"}


def error_json(status: int, message: str) -> bytes:
    """OpenAI's error shape (what unmatched routes answer too), for errors before routing."""
    kind = "invalid_request_error" if status < 500 else "api_error"
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None,
                                   "code": _CODES.get(status)}})


def error_response(status: int, message: str, *, close: bool = True) -> web.Response:
    resp = web.Response(status=status, body=error_json(status, message),
                        content_type="application/json")
    resp.headers["Server"] = SERVER_NAME
    if status == 503:
        resp.headers["Retry-After"] = "1"
    if close:
        resp.force_close()
    return resp


def raw_response(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for writing straight to a socket."""
    body = error_json(status, message)
    retry = "Retry-After: 1\r\n" if status == 503 else ""
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nServer: {SERVER_NAME}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{retry}"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


def _all_received(body: StreamReader) -> bool:
    """Whether the whole body has arrived, read by the handler or not (``is_eof`` is only true
    once it is read too: a body waiting in the buffer is not a slow sender)."""
    return body.is_eof() or bool(getattr(body, "_eof", False))


class EdgeProtocol(RequestHandler):
    """One client connection (see the module docstring)."""

    def __init__(self, manager: EdgeServer, *, limits: LimitsConfig, errors: ClientErrorLog,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.edge = manager
        self.limits = limits
        self.errors = errors
        # Over the connection cap: serve health probes only, then close.
        self.overflow = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._partial_head = False
        self._body: StreamReader | None = None  # the body of the last request parsed
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_bytes = 0  # received in the current window

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        edge = self.edge
        head_seconds = self.limits.header_timeout_seconds
        if edge.open_count() - len(edge.overflowing) > self.limits.max_connections:
            edge.make_room()
            self.overflow = True
            edge.overflowing[self] = None
            head_seconds = min(head_seconds, OVERFLOW_HEAD_SECONDS)
        self._arm_head(head_seconds)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        if self.overflow:
            self.overflow = False
            self.edge.overflowing.pop(self, None)
        super().connection_lost(exc)

    @property
    def waiting(self) -> bool:
        """No request of this connection is being handled or queued."""
        return not (self._request_in_progress or self._messages)

    def refuse(self) -> None:
        """Answer 503 without reading any (more of the) request, and close."""
        self.errors.log("too many open connections; a connection was refused", 503, None)
        if self.transport is not None:
            self.transport.write(raw_response(503, "the gateway has too many open connections;"
                                                   " retry shortly"))
        self.force_close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    # -- reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if data and (self._body is None or _all_received(self._body)):
            self._partial_head = True
            if self._head_timer is None:
                self._arm_head(self.limits.header_timeout_seconds)
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._partial_head = False
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._messages:
                self._watch_body(self._messages[-1][1])
        elif self._body_timer is not None:
            self._body_bytes += len(data)

    def _arm_head(self, seconds: float) -> None:
        if seconds > 0:
            self._head_timer = self._loop.call_later(seconds, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._force_close or self._close or self.transport is None:
            return
        if not self.waiting:  # bytes behind a request being served: timed from its end
            self._arm_head(self.limits.header_timeout_seconds)
            return
        if self.overflow:
            self.refuse()
            return
        if self._partial_head:
            self.errors.log("the request head did not arrive in time", 408, self._remote())
            self.transport.write(raw_response(408, "the request head did not arrive in time"))
        self.force_close()

    def _process_keepalive(self) -> None:
        if self._partial_head:
            return  # a request is arriving: the header timeout decides, and answers 408
        super()._process_keepalive()

    def _watch_body(self, body: StreamReader) -> None:
        self._body = body
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if not _all_received(body) and self.limits.body_timeout_seconds > 0:
            self._body_bytes = 0
            self._body_timer = self._loop.call_later(self.limits.body_timeout_seconds,
                                                     self._body_tick)

    def _body_tick(self) -> None:
        self._body_timer = None
        body = self._body
        if body is None or _all_received(body) or self._force_close or self.transport is None:
            return
        window = self.limits.body_timeout_seconds
        paused = self._reading_paused or self._buffer_paused
        if not paused and self._body_bytes < self.limits.body_min_rate_bytes * window:
            self.errors.log("the request body arrived too slowly; connection closed", 408,
                            self._remote())
            self.force_close()
            return
        self._body_bytes = 0
        self._body_timer = self._loop.call_later(window, self._body_tick)

    def _remote(self) -> str | None:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

    # -- answering -------------------------------------------------------------------------------

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """Parser errors (and failures past the app's own error handling) in the JSON shape, with
        a fixed message: never aiohttp's text, which quotes the request bytes."""
        described = describe(exc)
        if described is not None:
            status, text = described
            self.errors.log(text, status, self._remote())
        elif status == 504:
            text = "the request timed out"
        else:
            status, text = 500, "internal error in the gateway"
            self.logger.error("unhandled error serving a request from %s", self._remote(),
                              exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started")
        return error_response(status, text)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        described = describe(exc if isinstance(exc, BaseException) else None)
        if described is not None:  # e.g. a body that failed to decode, met while draining it
            self.errors.log(described[1], described[0], self._remote())
            return
        super().log_exception(*args, **kw)

    async def finish_response(self, request: Any, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400 and not resp.prepared:
            # Raised before the middlewares ran (an Expect header aiohttp does not know): its
            # text quotes the request.
            resp = error_response(resp.status, OUTSIDE_MESSAGES.get(
                resp.status, "the request cannot be served"), close=False)
        if not resp.prepared and (self.overflow or not request.content.is_eof()):
            # A body the handler did not read is drained after the answer, and may turn out
            # broken (bad chunking or encoding): the connection then closes, so the answer
            # must not promise to keep it.
            resp.force_close()
        return await super().finish_response(request, resp, start_time)


class EdgeServer(web.Server):
    """aiohttp's low-level server, making ``EdgeProtocol`` connections and counting them."""

    def __init__(self, base: web.Server, limits: LimitsConfig, errors: ClientErrorLog) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation, loop=base._loop,
                         **base._kwargs)
        self.limits = limits
        self.errors = errors
        # Connections past the cap, oldest first: each may send a health probe.
        self.overflowing: dict[EdgeProtocol, None] = {}

    def open_count(self) -> int:
        return len(self._connections)

    def make_room(self) -> None:
        """At most OVERFLOW_ALLOWANCE connections wait past the cap: the oldest that is not being
        served is refused for a new one (a probe sends its request at once; a flood that does not
        gets no more room than this)."""
        if len(self.overflowing) < OVERFLOW_ALLOWANCE:
            return
        for conn in self.overflowing:
            if conn.waiting:
                del self.overflowing[conn]
                conn.overflow = False
                conn.refuse()
                return

    def __call__(self) -> EdgeProtocol:
        return EdgeProtocol(self, loop=self._loop, limits=self.limits, errors=self.errors,
                            **self._kwargs)


class EdgeRunner(web.AppRunner):
    """``AppRunner`` serving the app through ``EdgeServer``, with the limits' timeouts and sizes."""

    def __init__(self, app: web.Application, *, limits: LimitsConfig, errors: ClientErrorLog,
                 **kwargs: Any) -> None:
        super().__init__(
            app, keepalive_timeout=limits.keepalive_timeout_seconds,
            max_line_size=limits.max_header_bytes, max_field_size=limits.max_header_bytes,
            **kwargs)
        self.limits = limits
        self.errors = errors

    async def _make_server(self) -> web.Server:
        return EdgeServer(await super()._make_server(), self.limits, self.errors)
