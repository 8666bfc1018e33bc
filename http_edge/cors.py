"""CORS (off by default): with ``cors.allow_origins`` set, pages of those origins may call the
API from a browser. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an
allowed origin is answered 204 with the methods and headers it may use; an answer to an allowed
origin names it (never ``*`` with credentials), and exposes the headers a client reads (request
id, rate limits, Retry-After, what served it). Other origins get no CORS headers: the browser
keeps the answer from their page. The console is same-origin and never offered to other ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway_common.config import CorsConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

EXPOSED = ", ".join((
    "X-Request-Id", "Retry-After", "x-should-retry", "x-gateway-model", "x-gateway-attempts",
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"))
METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


class Cors:
    """The preflight middleware and the headers of every answer (``on_response_prepare``: a
    stream's headers leave before its handler returns)."""

    def __init__(self, config: CorsConfig) -> None:
        self.origins = frozenset(config.allow_origins)
        self.any = "*" in self.origins
        self.max_age = str(config.max_age_seconds)

    def allowed(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        if origin is None or request.path.startswith("/console"):
            return None
        return origin if self.any or origin in self.origins else None

    @web.middleware
    async def preflight(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers \
                and self.allowed(request) is not None:
            resp = web.Response(status=204)
            resp.headers["Access-Control-Allow-Methods"] = METHODS
            asked = request.headers.get("Access-Control-Request-Headers")
            if asked:
                resp.headers["Access-Control-Allow-Headers"] = asked
            resp.headers["Access-Control-Max-Age"] = self.max_age
            return resp
        return await handler(request)

    async def on_prepare(self, request: web.Request, resp: web.StreamResponse) -> None:
        origin = self.allowed(request)
        if origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = EXPOSED
        resp.headers["Vary"] = "Origin"


def setup(app: web.Application, config: CorsConfig) -> None:
    cors = Cors(config)
    app.middlewares.insert(0, cors.preflight)
    app.on_response_prepare.append(cors.on_prepare)
