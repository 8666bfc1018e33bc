"""Start an aiohttp app on a free loopback port: what every fake upstream does."""

from __future__ import annotations

from aiohttp import web


async def serve_app(app: web.Application, *, handler_cancellation: bool = True, port: int = 0,
                    backlog: int = 128, host: str = "127.0.0.1") -> tuple[web.AppRunner, int]:
    """Run ``app`` on ``host`` at ``port`` (0: one the OS picks); returns the runner and the port.

    ``handler_cancellation`` lets a fake notice a client that goes away (its handler is cancelled).
    """
    runner = web.AppRunner(app, access_log=None, handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=backlog)
    await site.start()
    bound: int = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound
