"""Route registration and the small helpers every dialect's handlers share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from grpc import aio

from http_edge.core_client import upstream_seconds
from http_edge.state import ROUTE_DIALECTS, STATE, Dialect

T = TypeVar("T")

# Marks a completion request as text generation on the model itself (the TGI routes, the oicm
# ``inputs`` form): the core lets a chat model serve it (``gateway_core.servicers.inference``).
GENERATE_KEY = "igw-generate"
Metadata = tuple[tuple[str, str], ...]


def generating(metadata: Metadata) -> Metadata:
    """``metadata`` with the text-generation mark added."""
    return (*metadata, (GENERATE_KEY, "1"))


def add_routes(
    app: web.Application, dialect: Dialect, routes: Sequence[tuple[str, str, Handler]]
) -> None:
    """Register a dialect's routes; errors on them are rendered in that dialect's shape."""
    for method, path, handler in routes:
        route = app.router.add_route(method, path, handler)
        app[ROUTE_DIALECTS][route] = dialect


async def unary(request: web.Request, call: aio.UnaryUnaryCall[Any, T]) -> T:
    """Await a unary core call and note the upstream's share of its time."""
    resp = await call
    request[STATE].upstream_seconds = upstream_seconds(await call.trailing_metadata())
    return resp


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")
