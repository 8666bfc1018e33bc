"""The edge's app factory and runner.

``create_app(config)`` builds the aiohttp application: middlewares in their order, the way to
the core opened and closed in ``cleanup_ctx``, the ops routes and every dialect's routes.
``start_edge`` runs it through ``protocol.EdgeRunner`` (bounded time and connections, parser
errors without the request's bytes) with ``handler_cancellation=True``, so a client that goes away
cancels its handler, its call to the core and, through the core, the upstream request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from gateway_common import tls
from gateway_common.budget import ByteBudget
from gateway_common.config import GatewayConfig
from gateway_common.core_api import CoreAPI
from http_edge import console, cors
from http_edge.core_client import CoreClient
from http_edge.dialects import admin, endpoint, mlflow, oicm, openai, openai_tasks, tgi, unified
from http_edge.logs import ClientErrorFilter, ClientErrorLog
from http_edge.middlewares import (
    buffers_middleware,
    context_middleware,
    error_middleware,
    guard_middleware,
    metrics_middleware,
)
from http_edge.protocol import OVERFLOW_ALLOWANCE, SERVER_NAME, EdgeRunner
from http_edge.routing import add_routes, json_response
from http_edge.state import BUFFERS, CONFIG, CORE, ROUTE_DIALECTS, Dialect

log = logging.getLogger(__name__)

DRAINING = web.AppKey("draining", asyncio.Event)


# The edge's HTTP server logs here (aiohttp's own default is ``aiohttp.server``); client errors
# are one rate-limited line each, without the request's bytes.
server_log = logging.getLogger("http_edge.server")
server_log.addFilter(ClientErrorFilter())

OPS = Dialect("ops", openai.error_json, openai.stream_error)


async def health(request: web.Request) -> web.Response:
    """200 when the core answers its health check as SERVING, 503 otherwise."""
    if await request.app[CORE].serving():
        return json_response({"status": "OK"})
    return json_response({"status": "UNAVAILABLE", "detail": "the gateway core is not serving"},
                         status=503)


async def live(request: web.Request) -> web.Response:
    """200 while the process answers at all (a liveness probe: restart it when this fails)."""
    return json_response({"status": "OK"})


async def ready(request: web.Request) -> web.Response:
    """200 when the gateway should get traffic: not draining for shutdown, and the core serving
    (the core reports NOT_SERVING while it drains too)."""
    if request.app[DRAINING].is_set():
        return json_response({"status": "DRAINING", "detail": "the gateway is shutting down"},
                             status=503)
    return await health(request)


def _registry() -> Any:
    """The registry /metrics shows: this process's, or with ``serve --workers`` the counters
    and histograms of every worker summed (prometheus-client's multiprocess mode), gauges per
    worker (a ``pid`` label), and this worker's pool states."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    from prometheus_client import CollectorRegistry, multiprocess

    from gateway_core.traffic.metrics import TrafficCollector

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(TrafficCollector())
    return registry


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(_registry()))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def _server_header(request: web.Request, resp: web.StreamResponse) -> None:
    """The product's name, without the version of anything (aiohttp would name itself)."""
    resp.headers["Server"] = SERVER_NAME


def create_app(config: GatewayConfig, core_address: str | None = None,
               core: CoreAPI | None = None,
               buffers: ByteBudget | None = None) -> web.Application:
    """The edge application, talking to the core at ``core_address`` (default from config), or
    through ``core`` when given (the core in process, in one process with it). Request bodies are
    counted against ``buffers`` (the core's, in one process with it)."""
    limit = max(config.limits.max_body_bytes, config.limits.max_upload_bytes)
    app = web.Application(
        middlewares=[context_middleware, metrics_middleware, error_middleware, guard_middleware,
                     buffers_middleware],
        client_max_size=limit,
    )
    if config.cors.allow_origins:
        cors.setup(app, config.cors)
    app.on_response_prepare.append(_server_header)
    app[CONFIG] = config
    app[ROUTE_DIALECTS] = {}
    app[BUFFERS] = buffers or ByteBudget(config.limits.max_buffered_bytes)

    async def core_ctx(app: web.Application) -> AsyncIterator[None]:
        client = CoreClient(config, core_address, core)
        app[CORE] = client
        yield
        await client.close()

    app.cleanup_ctx.append(core_ctx)
    app[DRAINING] = asyncio.Event()
    add_routes(app, OPS, [("GET", "/health", health), ("GET", "/health/live", live),
                          ("GET", "/health/ready", ready), ("GET", "/metrics", metrics_handler)])
    admin.setup(app)
    openai.setup(app)
    openai_tasks.setup(app)
    oicm.setup(app)
    endpoint.setup(app)
    mlflow.setup(app)
    unified.setup(app)
    tgi.setup(app)
    console.setup(app)
    return app


def _check_open_files(max_connections: int) -> None:
    """Warn when the connection cap cannot be reached: past the open-file limit the OS refuses
    connections before the edge can answer them (and the upstream sessions need files too)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + OVERFLOW_ALLOWANCE + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning("limits.max_connections is %d but the open-file limit is %d: raise it "
                    "(ulimit -n %d) or lower the cap", max_connections, soft, needed)


@dataclass
class EdgeHandle:
    runner: web.AppRunner
    port: int

    def drain(self) -> None:
        """Fail /health/ready from now on, while still serving every request."""
        self.runner.app[DRAINING].set()

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_edge(
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    core_address: str | None = None,
    core: CoreAPI | None = None,
    buffers: ByteBudget | None = None,
) -> EdgeHandle:
    """Start the edge; ``port=0`` picks a free port (see ``handle.port``)."""
    app = create_app(config, core_address, core, buffers)
    runner = EdgeRunner(
        app,
        limits=config.limits,
        errors=ClientErrorLog(server_log),
        handler_cancellation=True,
        shutdown_timeout=config.timeouts.shutdown_grace_seconds,
        access_log=None,
        logger=server_log,
    )
    _check_open_files(config.limits.max_connections)
    await runner.setup()
    site = web.TCPSite(
        runner,
        host or config.listen.host,
        config.listen.http_port if port is None else port,
        backlog=1024,
        ssl_context=tls.edge_context(config.listen.tls),
        reuse_port=config.listen.reuse_port or None,
    )
    await site.start()
    addresses = runner.addresses
    bound = addresses[0][1] if addresses else (port or config.listen.http_port)
    log.info("edge listening on %s:%d", host or config.listen.host, bound)
    return EdgeHandle(runner, bound)
