"""``CoreAPI`` over gRPC: the generated stubs on one channel (the core in another process, or
``listen.core_transport: grpc``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from gateway_common.core_api import (
    ADMIN,
    HEALTH,
    INFERENCE,
    MODELS,
    CallOptions,
    Metadata,
    Reply,
    Req,
    Resp,
    Rpc,
    ServerStream,
    Unary,
)
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc

_STUBS: dict[str, Any] = {
    INFERENCE: pb_grpc.InferenceStub,
    MODELS: pb_grpc.ModelsStub,
    ADMIN: apb_grpc.AdminStub,
    HEALTH: health_pb2_grpc.HealthStub,
}


class GrpcCore:
    """The core's services through their generated stubs on ``channel`` (owned: closed here)."""

    def __init__(self, channel: aio.Channel) -> None:
        self.channel = channel
        self._stubs = {service: stub(channel) for service, stub in _STUBS.items()}

    def _method(self, rpc: Rpc[Any, Any]) -> Any:
        return getattr(self._stubs[rpc.service], rpc.name)

    async def unary(self, rpc: Unary[Req, Resp], request: Req, options: CallOptions
                    ) -> Reply[Resp]:
        call = self._method(rpc)(request, timeout=options.timeout, metadata=options.metadata)
        message: Resp = await call
        return Reply(message, tuple(await call.trailing_metadata() or ()))

    def stream(self, rpc: ServerStream[Req, Resp], request: Req, options: CallOptions
               ) -> GrpcStream[Resp]:
        return GrpcStream(self._method(rpc)(request, timeout=options.timeout,
                                            metadata=options.metadata))

    async def close(self) -> None:
        await self.channel.close()


class GrpcStream(AsyncIterator[Resp]):
    """A server-streaming call; leaving its ``async with`` early cancels it."""

    def __init__(self, call: aio.UnaryStreamCall[Any, Resp]) -> None:
        self._call = call
        self._trailing: Metadata = ()
        self._initial: Metadata | None = None

    async def __aenter__(self) -> GrpcStream[Resp]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        if not self._call.done():
            self._call.cancel()

    def __aiter__(self) -> GrpcStream[Resp]:
        return self

    async def __anext__(self) -> Resp:
        message = await self._call.read()
        if self._initial is None:  # it came with the first message (or the end)
            self._initial = tuple(await self._call.initial_metadata() or ())
        if message is aio.EOF:
            self._trailing = tuple(await self._call.trailing_metadata() or ())
            raise StopAsyncIteration
        return message  # type: ignore[return-value]  # EOF is excluded above

    def initial_metadata(self) -> Metadata:
        return self._initial or ()

    def trailing_metadata(self) -> Metadata:
        return self._trailing
