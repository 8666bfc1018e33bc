"""Edge middlewares, one concern each; their order is set in ``app.py``:
request context (id, dialect, start time) → metrics → errors → guard → buffers → handler."""

from __future__ import annotations

import logging
import os
import re
import time

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from grpc import aio

from gateway_common import access_log, tracing
from gateway_common.metrics import child
from http_edge import metrics
from http_edge.errors import HTTP_KINDS, REASON_TABLE, EdgeError, from_rpc_error
from http_edge.protocol import HEALTH_PATHS, EdgeProtocol
from http_edge.state import (
    BUFFERS,
    MODEL_UNRESOLVED,
    ROUTE_DIALECTS,
    STARTED,
    STATE,
    Dialect,
    RequestState,
)

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[\w.:@/+=-]{1,128}$", re.ASCII)  # gRPC metadata is ASCII


def dialect_of(request: web.Request) -> Dialect:
    from http_edge.dialects.openai import OPENAI  # the default shape for unmatched routes

    route = request.match_info.route
    return request.app[ROUTE_DIALECTS].get(route, OPENAI)


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Stamps the request with its id (the caller's, when well formed), dialect and start time."""
    request[STARTED] = time.perf_counter()
    rid = request.headers.get("X-Request-Id", "")
    if not _REQUEST_ID.match(rid):
        rid = os.urandom(16).hex()  # as random as uuid4().hex, at a third of the cost
    state = request[STATE] = RequestState(dialect=dialect_of(request).name, request_id=rid)
    if tracing.enabled():
        route = request.match_info.route.resource
        template = route.canonical if route is not None else "unmatched"
        state.span = tracing.start(f"{request.method} {template}",
                                   request.headers.get("traceparent"), "SERVER",
                                   {"http.request.method": request.method,
                                    "http.route": template, "gateway.request_id": rid})
        state.traceparent = tracing.header_of(state.span)
    try:
        resp = await handler(request)
    except web.HTTPException as exc:  # redirects and the like
        if access_log.enabled():
            _access(request, state, exc.status)
        tracing.end(state.span, http__response__status_code=exc.status)
        raise
    except BaseException as exc:
        tracing.end(state.span, exc)
        raise
    if not resp.prepared:
        resp.headers["X-Request-Id"] = rid
        state.served_headers(resp.headers)
    if access_log.enabled():
        _access(request, state, resp.status)
    tracing.end(state.span, http__response__status_code=resp.status,
                gen_ai__request__model=state.model if state.model != MODEL_UNRESOLVED else None)
    return resp


def _access(request: web.Request, state: RequestState, status: int) -> None:
    route = request.match_info.route.resource
    tokens = state.tokens
    access_log.write({
        "request_id": state.request_id, "dialect": state.dialect, "method": request.method,
        "route": route.canonical if route is not None else None,
        "model": state.model if state.model != MODEL_UNRESOLVED else None,
        "served_model": state.served_model, "endpoint": state.upstream_endpoint,
        "attempts": int(state.attempts) if state.attempts else None, "status": status,
        "duration_ms": round((time.perf_counter() - request[STARTED]) * 1000, 2),
        "ttft_ms": round(state.ttft * 1000, 2) if state.ttft is not None else None,
        "prompt_tokens": tokens[0] if tokens else None,
        "completion_tokens": tokens[1] if tokens else None,
        "token_id": state.token_id, "end_user": state.end_user,
        "error": state.error_reason, "trace_id": tracing.trace_id(state.span),
    })


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request[STATE]
    if request.match_info.route.resource is None or state.dialect == "ops":
        return await handler(request)
    gauge = child(metrics.IN_FLIGHT, state.dialect)
    gauge.inc()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except BaseException:
        status = 499  # cancelled: the client went away
        raise
    finally:
        gauge.dec()
        elapsed = time.perf_counter() - request[STARTED]
        child(metrics.REQUESTS, state.dialect, state.task, state.model, str(status)).inc()
        child(metrics.REQUEST_DURATION, state.dialect, state.task, state.model).observe(elapsed)
        if state.ttft is not None:
            child(metrics.TTFT, state.dialect, state.model).observe(state.ttft)
        if state.upstream_seconds is not None:
            child(metrics.OVERHEAD, state.dialect, state.task).observe(
                max(0.0, elapsed - state.upstream_seconds))
        if state.prompt_tokens:
            child(metrics.PROMPT_TOKENS, state.model).inc(state.prompt_tokens)
        if state.completion_tokens:
            child(metrics.COMPLETION_TOKENS, state.model).inc(state.completion_tokens)
        if status >= 400 or state.error_reason:
            child(metrics.ERRORS, state.dialect, state.error_reason or str(status)).inc()


def error_response(request: web.Request, err: EdgeError) -> web.Response:
    state = request[STATE]
    state.error_reason = err.reason
    dialect = dialect_of(request)
    body = orjson.dumps(dialect.error_body(err, state.request_id))
    resp = web.Response(status=err.status, body=body, content_type="application/json")
    if not err.kind.retry or state.no_retry:
        resp.headers["x-should-retry"] = "false"
    if err.retry_after is not None:
        resp.headers["Retry-After"] = err.retry_after
    if err.status == 401:
        resp.headers["WWW-Authenticate"] = "Bearer"
    if err.close:
        resp.force_close()
    if err.kind.retry_after is not None:
        resp.headers["Retry-After"] = str(err.kind.retry_after)
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes the dialect's error body with the status from the one table."""
    try:
        return await handler(request)
    except EdgeError as err:
        return error_response(request, err)
    except aio.AioRpcError as exc:
        return error_response(request, from_rpc_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = HTTP_KINDS.get(exc.status, HTTP_KINDS[400 if exc.status < 500 else 500])
        message = {
            # The path and method are not quoted: a client may put anything in them.
            404: "no route for this method and path",
            405: "this method is not allowed on this path",
            413: "the request body is larger than the gateway accepts",
        }.get(exc.status, exc.reason)
        resp = error_response(request, EdgeError(kind, message))
        resp.set_status(exc.status)
        for name in ("Allow",):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
        return resp
    except Exception:
        log.exception("unhandled error (request id %s)", request[STATE].request_id)
        rid = request[STATE].request_id
        return error_response(request, EdgeError(
            HTTP_KINDS[500], f"internal error in the gateway (request id {rid})"))


# Headers that carry a credential: two of one kind would leave it to chance which is checked.
CREDENTIAL_HEADERS = ("Authorization", "x-api-key")


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuses what must not be served: any request but a health probe on a connection past the
    connection cap (503), and an ambiguous credential (two ``Authorization`` or ``x-api-key``
    headers, 400)."""
    protocol = request.protocol
    if (isinstance(protocol, EdgeProtocol) and protocol.overflow
            and request.path not in HEALTH_PATHS):
        raise EdgeError(REASON_TABLE["overloaded"],
                        "the gateway has too many open connections; retry shortly",
                        reason="too_many_connections")
    for name in CREDENTIAL_HEADERS:
        if len(request.headers.getall(name, ())) > 1:
            raise EdgeError.bad_request(f"the request carries more than one {name} header")
    return await handler(request)


@web.middleware
async def buffers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Gives back to the process's budget what the request's body held (``body.charge``), when
    its handler is done with it."""
    try:
        return await handler(request)
    finally:
        state = request[STATE]
        if state.held:
            request.app[BUFFERS].give_back(state.held)
            state.held = 0
