"""The edge's one channel to the core, its stubs, and the per-request call options.

Every call made by a dialect goes through ``CoreClient.options(request)``: the deadline from
``OICM-Request-Timeout`` (or the fallback, marked so the core applies the model's own timeout),
the caller's credentials and the request id as metadata. No auth decision is made here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

import grpc
from aiohttp import web
from grpc import aio

from gateway_common.config import GatewayConfig
from http_edge.errors import EdgeError
from http_edge.state import STATE
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

TIMEOUT_HEADER = "OICM-Request-Timeout"
DEFAULT_DEADLINE_KEY = "igw-default-deadline"
ENDPOINT_KEY = "igw-endpoint"
UPSTREAM_SECONDS_KEY = "igw-upstream-seconds"
# Model names seen in labels are re-read from the core this often.
MODELS_REFRESH_SECONDS = 30.0


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
    """Stubs on one shared channel, plus the model names the core serves (for bounded labels)."""

    def __init__(self, config: GatewayConfig, address: str | None = None,
                 channel: aio.Channel | None = None) -> None:
        """A gRPC channel to ``address`` (default from config), or the ``channel`` given: the
        core's local channel when both run in one process."""
        self.config = config
        self.address = "local" if channel is not None else (address or config.core_address)
        self.channel = channel or aio.insecure_channel(self.address, options=channel_options(config))
        self.inference = pb_grpc.InferenceStub(self.channel)
        self.models = pb_grpc.ModelsStub(self.channel)
        self.admin = apb_grpc.AdminStub(self.channel)
        # name or alias → model id, as last read from the core (from config until then).
        self.model_names: dict[str, str] = config.model_names()
        self._refresher: asyncio.Task[None] | None = None
        self.default_timeout = config.timeouts.max_seconds

    async def start(self) -> None:
        # With auth on, listing models needs a caller's token: the config's names serve instead.
        if not self.config.auth.enabled:
            self._refresher = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await self.channel.close()

    async def refresh_models(self) -> None:
        resp = await self.models.ListModels(pb.ListModelsRequest(), timeout=5)
        names: dict[str, str] = {}
        for m in resp.models:
            names[m.id] = m.id
            for alias in m.aliases:
                names[alias] = m.id
        self.model_names = names

    async def _refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh_models()
                delay = MODELS_REFRESH_SECONDS
            except grpc.RpcError as exc:
                # The core may still be starting (edge and core started together): retry soon.
                log.debug("cannot read the model list from the core yet: %s", exc)
                delay = 1.0
            await asyncio.sleep(delay)

    def label_for(self, model: str) -> str:
        """A bounded metrics label for a model name from a request."""
        return self.model_names.get(model, "unknown")

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

    def options(self, request: web.Request) -> tuple[float, tuple[tuple[str, str], ...]]:
        """(timeout, metadata) for a core call made on behalf of ``request``."""
        timeout, fallback = self.timeout_of(request)
        headers = request.headers
        md: list[tuple[str, str]] = [("x-request-id", request[STATE].request_id)]
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
        return timeout, tuple(md)


def metadata_value(value: str) -> str:
    """A header value as gRPC metadata, which must be printable ASCII: anything else escaped, so
    that the core sees a credential it will refuse (401), not a call gRPC cannot send (500)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):x}" for c in value)


def upstream_seconds(trailing: aio.Metadata | None) -> float | None:
    for key, value in trailing or ():
        if key == UPSTREAM_SECONDS_KEY:
            try:
                return float(value)
            except (TypeError, ValueError):
                return None
    return None
