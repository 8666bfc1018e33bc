"""The Admin servicer: tokens, usage and the full model list. Thin: rules live in ``service``.

The admin credential is checked by ``AdminAuthInterceptor`` before any method here runs.
"""

from __future__ import annotations

import math
import time
from typing import Any

from grpc import aio

from gateway_core.auth.records import TokenRecord, UsageRow
from gateway_core.auth.service import TokenService
from gateway_core.auth.usage import UsageRecorder
from gateway_core.errors import InvalidRequest
from gateway_core.registry import TASK_NAME, ModelRegistry
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2 as pb

Ctx = aio.ServicerContext[Any, Any]

_GROUP_BY = {
    apb.QueryUsageRequest.GROUP_BY_UNSPECIFIED: "token_and_model",
    apb.QueryUsageRequest.GROUP_BY_TOKEN: "token",
    apb.QueryUsageRequest.GROUP_BY_MODEL: "model",
    apb.QueryUsageRequest.GROUP_BY_TOKEN_AND_MODEL: "token_and_model",
}


def _secs(value: float | None) -> int:
    return int(value) if value is not None else 0


def token_proto(r: TokenRecord, now: float | None = None) -> apb.Token:
    return apb.Token(
        id=r.id, name=r.name, prefix=r.prefix, models=list(r.models),
        created_at=_secs(r.created_at), expires_at=_secs(r.expires_at),
        last_used_at=_secs(r.last_used_at), revoked_at=_secs(r.revoked_at),
        status=r.status(time.time() if now is None else now),
    )


def usage_proto(r: UsageRow) -> apb.UsageRow:
    return apb.UsageRow(
        token_id=r.token_id, token_name=r.token_name, model=r.model, requests=r.requests,
        errors=r.errors, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
        mean_latency_ms=r.mean_latency_ms, end_users=r.end_users,
    )


class AdminServicer(apb_grpc.AdminServicer):
    def __init__(self, tokens: TokenService, registry: ModelRegistry,
                 usage: UsageRecorder) -> None:
        self.tokens = tokens
        self.registry = registry
        self.usage = usage

    async def CreateToken(self, request: apb.CreateTokenRequest, context: Ctx
                          ) -> apb.CreateTokenResponse:
        if request.expires_at < 0 or request.expires_in_seconds < 0:
            raise InvalidRequest("the expiry must not be negative")
        expires_at: float | None = None
        if request.expires_at:
            expires_at = float(request.expires_at)
        elif request.expires_in_seconds:
            expires_at = time.time() + request.expires_in_seconds
        record, secret = await self.tokens.create(request.name, list(request.models), expires_at)
        return apb.CreateTokenResponse(token=token_proto(record), secret=secret)

    async def ListTokens(self, request: apb.ListTokensRequest, context: Ctx
                         ) -> apb.ListTokensResponse:
        now = time.time()
        tokens = await self.tokens.list(request.model or None, request.include_revoked)
        return apb.ListTokensResponse(tokens=[token_proto(t, now) for t in tokens])

    async def GetToken(self, request: apb.GetTokenRequest, context: Ctx) -> apb.Token:
        return token_proto(await self.tokens.get(request.id))

    async def RevokeToken(self, request: apb.RevokeTokenRequest, context: Ctx) -> apb.Token:
        return token_proto(await self.tokens.revoke(request.id))

    async def QueryUsage(self, request: apb.QueryUsageRequest, context: Ctx
                         ) -> apb.QueryUsageResponse:
        for name in ("start_time", "end_time"):
            value = getattr(request, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidRequest(f"'{name}' must be Unix seconds (0: unbounded)")
        if request.end_time and request.end_time <= request.start_time:
            raise InvalidRequest("'end_time' must be after 'start_time'")
        model = None
        if request.model:
            model = self.tokens.resolve(request.model) or request.model
        await self.usage.flush()  # this replica's own pending records first
        rows = await self.tokens.store.query_usage(
            token_id=request.token_id or None, model=model,
            start=request.start_time or None, end=request.end_time or None,
            group_by=_GROUP_BY.get(request.group_by, "token_and_model"))
        return apb.QueryUsageResponse(rows=[usage_proto(r) for r in rows])

    async def ListModels(self, request: pb.ListModelsRequest, context: Ctx
                         ) -> pb.ListModelsResponse:
        task = TASK_NAME.get(request.task)
        return pb.ListModelsResponse(models=[
            e.admin_proto() for e in self.registry.entries() if task is None or e.serves(task)])
