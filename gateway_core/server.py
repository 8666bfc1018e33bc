"""The core's server factory: wires registry, servicers, interceptors, health and reflection.

``start_core(config)`` binds and starts a grpc.aio server and returns a handle; tests bind port 0.
Interceptor order (outermost first) is set here and only here: metrics, errors, then usage and
auth (``gateway_core/auth``; off when ``auth.enabled`` is false).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from gateway_common import tls
from gateway_common.budget import ByteBudget
from gateway_common.config import ConfigError, GatewayConfig, load_config, validate
from gateway_core.auth.runtime import AuthRuntime, start_auth
from gateway_core.in_process import HandlerTable, InProcessCore, Registrar
from gateway_core.interceptors import ErrorInterceptor, MetricsInterceptor
from gateway_core.limits.limiter import Limiter
from gateway_core.providers.base import SessionPool
from gateway_core.registry import ModelRegistry
from gateway_core.servicers.inference import InferenceServicer
from gateway_core.servicers.models import ModelsServicer
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

# Keepalive: answer the edge's pings on long calls (minutes) without treating them as abuse, and
# ping idle clients so that dead connections are noticed.
def server_options(config: GatewayConfig) -> list[tuple[str, Any]]:
    ping_ms = int(config.timeouts.keepalive_seconds * 1000)
    return [
        ("grpc.keepalive_time_ms", ping_ms),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min(ping_ms, 5_000)),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_receive_message_length", config.limits.max_upload_bytes + 1024 * 1024),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ("grpc.so_reuseport", 1 if config.listen.reuse_port else 0),
    ]


@dataclass
class CoreHandle:
    """A running core: its server, bound port and what must be closed on stop."""

    server: aio.Server
    port: int
    registry: ModelRegistry
    sessions: SessionPool
    health: HealthServicer
    extras: list[Any] = field(default_factory=list)
    # Tokens, admin and usage (None when auth.enabled is false).
    auth: AuthRuntime | None = None
    # The same handlers and interceptors, called in this process (``serve``'s edge).
    in_process: InProcessCore | None = None
    # The process's budget of buffered bytes (an edge in this process shares it).
    buffers: ByteBudget | None = None
    # The config it serves, and the file it came from (for reloads).
    config: GatewayConfig | None = None
    config_path: str | None = None

    async def reload(self) -> list[str]:
        """Re-read the config file and serve its models (see ``ModelRegistry.reload``); the
        other settings stay as the process started with them. Raises ConfigError naming the bad
        key; the running models stay then."""
        if not self.config_path or self.config is None:
            raise ConfigError("", "the gateway runs without a config file (--config): there is "
                              "nothing to re-read")
        fresh = load_config(self.config_path)
        merged = validate(dataclasses.replace(
            self.config, models=fresh.models, endpoints=fresh.endpoints,
            tgi_model=fresh.tgi_model))
        await self.registry.reload(merged, self.sessions)
        self.config = merged
        ids = [e.id for e in self.registry.entries()]
        log.info("config reloaded from %s: %d models (%s)", self.config_path, len(ids),
                 ", ".join(ids))
        return ids

    async def drain(self) -> None:
        """Report NOT_SERVING (readiness fails) while still serving: shutdown is coming."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None) -> None:
        await self.health.enter_graceful_shutdown()
        if self.in_process is not None:
            await asyncio.gather(self.server.stop(grace), self.in_process.stop(grace))
        else:
            await self.server.stop(grace)
        await self.registry.close()
        await self.sessions.close()
        for extra in self.extras:
            await extra.close()


def _add_reflection(server: Any, services: Sequence[str]) -> None:
    names = [*services, reflection.SERVICE_NAME, REFLECTION_V1]
    servicer = ReflectionServicer(names)
    reflection.enable_server_reflection(names, server)  # v1alpha, for the pip clients
    # v1 is the same wire format under another package name: serve it with the same servicer.
    handler = grpc.method_handlers_generic_handler(REFLECTION_V1, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    })
    server.add_generic_rpc_handlers((handler,))


async def start_core(
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    extra_interceptors: Sequence[aio.ServerInterceptor] = (),
    config_path: str | None = None,
) -> CoreHandle:
    """Build, bind and start the core. ``port=0`` picks a free port (see ``handle.port``)."""
    limiter = Limiter.from_config(config)  # (first: it may refuse the config)
    sessions = SessionPool()
    registry = ModelRegistry.from_config(config, sessions)
    await registry.start()
    auth = await start_auth(config, registry) if config.auth.enabled else None
    interceptors: list[aio.ServerInterceptor] = [
        MetricsInterceptor(), ErrorInterceptor(), *(auth.interceptors if auth else ()),
        *extra_interceptors,
    ]
    server = aio.server(interceptors=interceptors, options=server_options(config))
    table = HandlerTable(interceptors)
    # Every service goes on both: the gRPC port for other processes, the in-process table for an
    # edge in this one.
    both: Any = Registrar(server, table)
    buffers = ByteBudget(config.limits.max_buffered_bytes)
    pb_grpc.add_InferenceServicer_to_server(
        InferenceServicer(registry, config.limits, buffers, limiter), both)
    pb_grpc.add_ModelsServicer_to_server(ModelsServicer(registry), both)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, both)
    services = [s.full_name for s in pb.DESCRIPTOR.services_by_name.values()]
    handle_ref: list[CoreHandle] = []

    async def reload() -> list[str]:
        return await handle_ref[0].reload()

    if auth is not None:
        services += auth.add_to_server(both, limiter, reload)
    _add_reflection(both, [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    bind_host = host or config.listen.host
    address = f"{bind_host}:{config.listen.grpc_port if port is None else port}"
    credentials = tls.core_credentials(config.listen.tls)
    try:
        bound = server.add_insecure_port(address) if credentials is None \
            else server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's way of saying the bind failed
        bound = 0
    if bound == 0:
        await limiter.close()
        if auth is not None:
            await auth.close()
        await registry.close()
        await sessions.close()
        raise OSError(f"cannot listen on {address} (gRPC): the port is in use or the address "
                      "is not available here")
    await server.start()
    for name in ("", *services):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("core listening on %s:%d (%d models)", bind_host, bound, len(registry.entries()))
    handle = CoreHandle(server, bound, registry, sessions, health,
                        extras=[limiter, *([auth] if auth is not None else [])], auth=auth,
                        in_process=InProcessCore(table), buffers=buffers, config=config,
                        config_path=config_path)
    handle_ref.append(handle)
    return handle
