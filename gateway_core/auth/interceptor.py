"""The core's auth interceptors: model tokens on Inference and Models, the admin credential on Admin.

Health and reflection are not intercepted. Each call is authenticated from its metadata before the
servicer runs; the identity goes into ``current_identity`` for the rest of the call (usage, logs),
and the request's model is checked against the identity's scope. For TranscribeStream the model
is in the first message, so the request stream is wrapped and checked as that message arrives.
Models.ListModels answers with only the models the caller may call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from gateway_common.asyncgen import delegate
from gateway_core.auth.authenticator import AdminGuard, Authenticator, authorize
from gateway_core.auth.identity import Identity, current_identity
from gateway_core.interceptors import BehaviorInterceptor, StreamBehavior, UnaryBehavior
from gateway_core.registry import ModelRegistry
from inference_gateway.v1 import inference_pb2 as pb

Ctx = aio.ServicerContext[Any, Any]

INFERENCE = "/inference_gateway.v1.Inference/"
MODELS = "/inference_gateway.v1.Models/"
ADMIN = "/inference_gateway.v1.Admin/"
# Client-streaming methods: the model is in the first message's header.
_CLIENT_STREAMS = frozenset({"TranscribeStream"})


class AuthInterceptor(BehaviorInterceptor):
    """Authenticates every Inference and Models call and checks the model it names."""

    def __init__(self, auth: Authenticator, registry: ModelRegistry) -> None:
        super().__init__()
        self.auth = auth
        self.registry = registry

    def applies_to(self, method: str) -> bool:
        return method.startswith((INFERENCE, MODELS))

    def _wrap(self, method: str, h: grpc.RpcMethodHandler[Any, Any]
              ) -> grpc.RpcMethodHandler[Any, Any]:
        wrapped = super()._wrap(method, h)
        if wrapped is not h:
            return wrapped
        # A handler shape the base leaves alone (a unary-stream handler writing with
        # context.write, a bidirectional stream): never serve it unauthenticated.
        if h.unary_stream is not None:
            inner_w: Any = h.unary_stream

            async def writer(request: Any, context: Ctx) -> Any:
                identity = await self._identify(context)
                authorize(identity, getattr(request, "model", ""), self.registry)
                return await inner_w(request, context)

            return grpc.unary_stream_rpc_method_handler(
                writer, h.request_deserializer, h.response_serializer)
        inner_b: Any = h.stream_stream

        async def bidi(requests: Any, context: Ctx) -> AsyncIterator[Any]:
            await self._identify(context)
            async for item in inner_b(requests, context):
                yield item

        return grpc.stream_stream_rpc_method_handler(
            bidi, h.request_deserializer, h.response_serializer)

    async def _identify(self, context: Ctx) -> Identity:
        identity = await self.auth.authenticate(context.invocation_metadata())
        current_identity.set(identity)
        return identity

    async def around_unary(self, method: str, behavior: UnaryBehavior, request: Any,
                           context: Ctx) -> Any:
        identity = await self._identify(context)
        if method in _CLIENT_STREAMS:
            return await behavior(self._checked(request, identity), context)
        if method == "ListModels":
            listing: pb.ListModelsResponse = await behavior(request, context)
            if identity.models is None:
                return listing
            return pb.ListModelsResponse(
                models=[m for m in listing.models if m.id in identity.models])
        authorize(identity, request.id if method == "GetModel" else request.model,
                  self.registry)
        return await behavior(request, context)

    async def around_stream(
        self, method: str, behavior: StreamBehavior, request: Any, context: Ctx,
    ) -> AsyncIterator[Any]:
        identity = await self._identify(context)
        authorize(identity, request.model, self.registry)
        async with delegate(behavior(request, context)) as items:
            async for item in items:
                yield item

    async def _checked(self, requests: AsyncIterator[pb.TranscribeChunk], identity: Identity
                       ) -> AsyncIterator[pb.TranscribeChunk]:
        first = True
        async for chunk in requests:
            if first:
                first = False
                if chunk.HasField("header"):
                    authorize(identity, chunk.header.model, self.registry)
            yield chunk


class AdminAuthInterceptor(BehaviorInterceptor):
    """Admin calls need the admin credential; a model token is refused like any wrong secret."""

    def __init__(self, guard: AdminGuard) -> None:
        super().__init__()
        self.guard = guard

    def applies_to(self, method: str) -> bool:
        return method.startswith(ADMIN)

    async def around_unary(self, method: str, behavior: UnaryBehavior, request: Any,
                           context: Ctx) -> Any:
        self.guard.check(context.invocation_metadata())
        return await behavior(request, context)
