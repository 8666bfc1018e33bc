"""Route registration and the small helpers every dialect's handlers share."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from grpc import aio

from gateway_common.core_api import (
    ATTEMPTS_KEY,
    END_USER_LOG_KEY,
    ENDPOINT_LOG_KEY,
    MODEL_KEY,
    RATELIMIT_PREFIX,
    SERVED_MODEL_KEY,
    SHOULD_RETRY_KEY,
    TOKEN_LOG_KEY,
    UPSTREAM_SECONDS_KEY,
    USAGE_LOG_KEY,
    Metadata,
    Req,
    Resp,
    Unary,
    trailer,
)
from http_edge.state import CORE, ROUTE_DIALECTS, STATE, Dialect, RequestState


def add_routes(
    app: web.Application, dialect: Dialect, routes: Sequence[tuple[str, str, Handler]]
) -> None:
    """Register a dialect's routes; errors on them are rendered in that dialect's shape."""
    for method, path, handler in routes:
        route = app.router.add_route(method, path, handler)
        app[ROUTE_DIALECTS][route] = dialect


async def unary(request: web.Request, rpc: Unary[Req, Resp], message: Req) -> Resp:
    """Call the core on behalf of ``request`` and note what its trailers say."""
    core = request.app[CORE]
    try:
        reply = await core.api.unary(rpc, message, core.options(request))
    except aio.AioRpcError as exc:
        note_trailers(request[STATE], tuple(exc.trailing_metadata() or ()))
        raise
    note_trailers(request[STATE], reply.trailing)
    return reply.message


def note_trailers(state: RequestState, trailing: Metadata) -> None:
    """Note what the core's trailers say: the model the request resolved to (the metrics'
    label: the core names only configured models) and the upstream's share of the call's time
    (for the edge's own overhead figure)."""
    model = trailer(trailing, MODEL_KEY)
    if model:
        state.model = model
    note_served(state, trailing)
    if trailer(trailing, SHOULD_RETRY_KEY) == "false":
        state.no_retry = True
    state.upstream_endpoint = trailer(trailing, ENDPOINT_LOG_KEY)
    state.token_id = trailer(trailing, TOKEN_LOG_KEY)
    state.end_user = trailer(trailing, END_USER_LOG_KEY)
    usage = trailer(trailing, USAGE_LOG_KEY)
    if usage:
        prompt, _, completion = usage.partition(",")
        with contextlib.suppress(ValueError):
            state.tokens = (int(prompt), int(completion))
    seconds = trailer(trailing, UPSTREAM_SECONDS_KEY)
    try:
        state.upstream_seconds = None if seconds is None else float(seconds)
    except ValueError:
        state.upstream_seconds = None


def note_served(state: RequestState, metadata: Metadata) -> None:
    """What served the request (``x-gateway-model``, ``x-gateway-attempts``), when said."""
    served = trailer(metadata, SERVED_MODEL_KEY)
    if served:
        state.served_model = served
        state.attempts = trailer(metadata, ATTEMPTS_KEY)
    limits = tuple((k, v) for k, v in metadata
                   if k.startswith(RATELIMIT_PREFIX) and isinstance(v, str))
    if limits:
        state.ratelimit = limits


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")
