"""The edge's app factory and runner.

``create_app(config)`` builds the aiohttp application: middlewares in their order, the way to
the core opened and closed in ``cleanup_ctx``, the ops routes and every dialect's routes.
``start_edge`` runs it with ``handler_cancellation=True``, so a client that goes away cancels its
handler, its call to the core and, through the core, the upstream request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway_common.config import GatewayConfig
from gateway_common.core_api import CoreAPI
from http_edge.core_client import CoreClient
from http_edge.dialects import admin, endpoint, mlflow, oicm, openai, openai_tasks, tgi, unified
from http_edge.middlewares import context_middleware, error_middleware, metrics_middleware
from http_edge.routing import add_routes, json_response
from http_edge.state import CONFIG, CORE, ROUTE_DIALECTS, Dialect

log = logging.getLogger(__name__)


class _UnparsedRequests(logging.Filter):
    """aiohttp logs a request it cannot parse at ERROR, with a traceback and the offending line
    quoted, and that line may be ``Authorization: Bearer <secret>``. Such a record becomes one
    INFO line naming the problem (the text before the quote), and never the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            problem = str(exc.message or "").split("\n", 1)[0].split(":", 1)[0].strip()[:120]
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "unparseable HTTP request from %s: %s (answered %d)"
            record.args = (remote, problem or exc.__class__.__name__, exc.code or 400)
            record.exc_info = record.exc_text = None
            record.stack_info = None
            if record.levelno > logging.INFO:
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# The edge's HTTP server logs here (aiohttp's own default is ``aiohttp.server``).
server_log = logging.getLogger("http_edge.server")
server_log.addFilter(_UnparsedRequests())

OPS = Dialect("ops", openai.error_json, openai.stream_error)


async def health(request: web.Request) -> web.Response:
    """200 when the core answers its health check as SERVING, 503 otherwise."""
    if await request.app[CORE].serving():
        return json_response({"status": "OK"})
    return json_response({"status": "UNAVAILABLE", "detail": "the gateway core is not serving"},
                         status=503)


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def create_app(config: GatewayConfig, core_address: str | None = None,
               core: CoreAPI | None = None) -> web.Application:
    """The edge application, talking to the core at ``core_address`` (default from config), or
    through ``core`` when given (the core in process, in one process with it)."""
    limit = max(config.limits.max_body_bytes, config.limits.max_upload_bytes)
    app = web.Application(
        middlewares=[context_middleware, metrics_middleware, error_middleware],
        client_max_size=limit,
    )
    app[CONFIG] = config
    app[ROUTE_DIALECTS] = {}

    async def core_ctx(app: web.Application) -> AsyncIterator[None]:
        client = CoreClient(config, core_address, core)
        app[CORE] = client
        yield
        await client.close()

    app.cleanup_ctx.append(core_ctx)
    add_routes(app, OPS, [("GET", "/health", health), ("GET", "/metrics", metrics_handler)])
    admin.setup(app)
    openai.setup(app)
    openai_tasks.setup(app)
    oicm.setup(app)
    endpoint.setup(app)
    mlflow.setup(app)
    unified.setup(app)
    tgi.setup(app)
    return app


@dataclass
class EdgeHandle:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_edge(
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    core_address: str | None = None,
    core: CoreAPI | None = None,
) -> EdgeHandle:
    """Start the edge; ``port=0`` picks a free port (see ``handle.port``)."""
    app = create_app(config, core_address, core)
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=config.timeouts.shutdown_grace_seconds,
        access_log=None,
        logger=server_log,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        host or config.listen.host,
        config.listen.http_port if port is None else port,
        backlog=1024,
    )
    await site.start()
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else (port or config.listen.http_port)
    log.info("edge listening on %s:%d", host or config.listen.host, bound)
    return EdgeHandle(runner, bound)
