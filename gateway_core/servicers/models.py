"""The Models servicer: what the gateway serves."""

from __future__ import annotations

from typing import Any

from grpc import aio

from gateway_core.registry import TASK_NAME, ModelRegistry
from gateway_core.servicers.inference import endpoint_of
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc


class ModelsServicer(pb_grpc.ModelsServicer):
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def ListModels(
        self, request: pb.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.ListModelsResponse:
        task = TASK_NAME.get(request.task)
        endpoint = endpoint_of(context)
        served = set(self.registry.endpoint(endpoint)) if endpoint is not None else None
        return pb.ListModelsResponse(models=[
            e.to_proto() for e in self.registry.entries()
            if (task is None or e.serves(task)) and (served is None or e.id in served)
        ])

    async def GetModel(
        self, request: pb.GetModelRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.Model:
        return self.registry.get(request.id).to_proto()
