"""The edge's way to the core (``CoreAPI``: the stubs on a channel, or the core in process) and
the per-request call options.

Every call made by a dialect goes through ``CoreClient.options(request)``: the deadline from
``OICM-Request-Timeout`` (or the fallback, marked so the core applies the model's own timeout),
the caller's credentials and the request id as metadata. No auth decision is made here.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import grpc
from aiohttp import web
from grpc import aio
from grpc_health.v1 import health_pb2

from gateway_common import tls
from gateway_common.config import GatewayConfig
from gateway_common.core_api import (
    DEFAULT_DEADLINE_KEY,
    ENDPOINT_KEY,
    FROM_EDGE_KEY,
    GENERATE_KEY,
    HEALTH_CHECK,
    PRIORITY_KEY,
    REQUEST_ID_KEY,
    CallOptions,
    CoreAPI,
)
from gateway_common.core_grpc import GrpcCore
from http_edge.errors import EdgeError
from http_edge.state import STATE

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "OICM-Request-Timeout"


def channel_options(config: GatewayConfig) -> list[tuple[str, Any]]:
    ping_ms = int(config.timeouts.keepalive_seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", ping_ms),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.max_send_message_length", config.limits.max_upload_bytes + 1024 * 1024),
        ("grpc.enable_retries", 0),
    ]


class CoreClient:
    """The core's API (one for the edge's lifetime) and how this edge's calls are made."""

    def __init__(self, config: GatewayConfig, address: str | None = None,
                 api: CoreAPI | None = None) -> None:
        """The stubs on a gRPC channel to ``address`` (default from config), or the ``api``
        given: the core in process when both run in one process."""
        self.config = config
        if api is None:
            address = address or config.core_address
            credentials = tls.channel_credentials(config.listen.tls)
            options = channel_options(config)
            if credentials is None:
                channel = aio.insecure_channel(address, options=options)
            else:
                name = config.listen.tls.core_server_name
                if name:
                    options = [*options, ("grpc.ssl_target_name_override", name)]
                channel = aio.secure_channel(address, credentials, options=options)
            api = GrpcCore(channel)
        self.api: CoreAPI = api
        self.default_timeout = config.timeouts.max_seconds

    async def close(self) -> None:
        await self.api.close()

    async def serving(self) -> bool:
        """Whether the core answers its health check as SERVING."""
        try:
            reply = await self.api.unary(HEALTH_CHECK, health_pb2.HealthCheckRequest(),
                                         CallOptions(2.0))
        except grpc.RpcError:
            return False
        return bool(reply.message.status == health_pb2.HealthCheckResponse.SERVING)

    def timeout_of(self, request: web.Request) -> tuple[float, bool]:
        """(seconds, is_fallback) for the request's deadline."""
        raw = request.headers.get(TIMEOUT_HEADER)
        if raw is None:
            return self.default_timeout, True
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds <= 0:
            raise EdgeError.bad_request(
                f"{TIMEOUT_HEADER} must be a positive number of seconds; got {raw[:40]!r}",
                param=TIMEOUT_HEADER,
            )
        return min(seconds, self.config.timeouts.max_seconds), False

    def options(self, request: web.Request) -> CallOptions:
        """(timeout, metadata) for a core call made on behalf of ``request``."""
        timeout, fallback = self.timeout_of(request)
        headers = request.headers
        state = request[STATE]
        md: list[tuple[str, str]] = [(REQUEST_ID_KEY, state.request_id), (FROM_EDGE_KEY, "1")]
        if state.traceparent:
            md.append(("traceparent", state.traceparent))
        auth = headers.get("Authorization")
        if auth:
            md.append(("authorization", metadata_value(auth)))
        api_key = headers.get("x-api-key")
        if api_key:
            md.append(("x-api-key", metadata_value(api_key)))
        if fallback:
            md.append((DEFAULT_DEADLINE_KEY, "1"))
        endpoint = request[STATE].endpoint
        if endpoint is not None:
            md.append((ENDPOINT_KEY, endpoint))
        if request[STATE].generating:
            md.append((GENERATE_KEY, "1"))
        priority = headers.get(PRIORITY_HEADER)
        if priority is not None:
            md.append((PRIORITY_KEY, metadata_value(priority.strip().lower())))
        return CallOptions(timeout, tuple(md))


# The request's priority class (critical, standard, sheddable), within what its token allows.
PRIORITY_HEADER = "x-gateway-priority"


def metadata_value(value: str) -> str:
    """A header value as gRPC metadata, which must be printable ASCII: anything else escaped, so
    that the core sees a credential it will refuse (401), not a call gRPC cannot send (500)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):x}" for c in value)
