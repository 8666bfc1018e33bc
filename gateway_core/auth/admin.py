"""The Admin servicer: tokens, usage and the full model list. Thin: rules live in ``service``.

The admin credential is checked by ``AdminAuthInterceptor`` before any method here runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from grpc import aio

from gateway_common.config import ConfigError, RateLimits
from gateway_core.auth.records import LIMIT_FIELDS, TokenRecord, UsageRow, limits_to_json
from gateway_core.auth.service import TokenService
from gateway_core.auth.usage import UsageRecorder
from gateway_core.errors import InvalidRequest
from gateway_core.limits.limiter import Limiter
from gateway_core.registry import TASK_NAME, ModelRegistry
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

Ctx = aio.ServicerContext[Any, Any]
# Re-reads the config file and serves its models; the ids served (raises ConfigError).
Reloader = Callable[[], Awaitable[list[str]]]

_GROUP_BY = {
    apb.QueryUsageRequest.GROUP_BY_UNSPECIFIED: "token_and_model",
    apb.QueryUsageRequest.GROUP_BY_TOKEN: "token",
    apb.QueryUsageRequest.GROUP_BY_MODEL: "model",
    apb.QueryUsageRequest.GROUP_BY_TOKEN_AND_MODEL: "token_and_model",
}


def _secs(value: float | None) -> int:
    return int(value) if value is not None else 0


def limits_proto(limits: RateLimits | dict[str, int]) -> apb.TokenLimits:
    values = limits if isinstance(limits, dict) else limits_to_json(limits)
    return apb.TokenLimits(**values)


def limits_of(message: apb.TokenLimits) -> RateLimits:
    return RateLimits(**{name: getattr(message, name) for name in LIMIT_FIELDS
                         if message.HasField(name)})


def token_proto(r: TokenRecord, now: float | None = None,
                remaining: dict[str, int] | None = None) -> apb.Token:
    token = apb.Token(
        id=r.id, name=r.name, prefix=r.prefix, models=list(r.models),
        created_at=_secs(r.created_at), expires_at=_secs(r.expires_at),
        last_used_at=_secs(r.last_used_at), revoked_at=_secs(r.revoked_at),
        status=r.status(time.time() if now is None else now), priority=r.priority,
        limits=limits_proto(r.limits),
    )
    if remaining:
        token.remaining.CopyFrom(limits_proto(remaining))
    return token


def usage_proto(r: UsageRow) -> apb.UsageRow:
    return apb.UsageRow(
        token_id=r.token_id, token_name=r.token_name, model=r.model, requests=r.requests,
        errors=r.errors, prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens,
        mean_latency_ms=r.mean_latency_ms, end_users=r.end_users,
    )


class AdminServicer(apb_grpc.AdminServicer):
    def __init__(self, tokens: TokenService, registry: ModelRegistry,
                 usage: UsageRecorder, limiter: Limiter | None = None,
                 reload: Reloader | None = None) -> None:
        self.tokens = tokens
        self.registry = registry
        self.usage = usage
        self.limiter = limiter
        self.reload = reload

    async def _shown(self, r: TokenRecord, now: float | None = None) -> apb.Token:
        remaining = None
        if self.limiter is not None and r.limits.any() and r.revoked_at is None:
            remaining = await self.limiter.remaining(r.id, r.limits)
        return token_proto(r, now, remaining)

    async def CreateToken(self, request: apb.CreateTokenRequest, context: Ctx
                          ) -> apb.CreateTokenResponse:
        if request.expires_at < 0 or request.expires_in_seconds < 0:
            raise InvalidRequest("the expiry must not be negative")
        expires_at: float | None = None
        if request.expires_at:
            expires_at = float(request.expires_at)
        elif request.expires_in_seconds:
            expires_at = time.time() + request.expires_in_seconds
        record, secret = await self.tokens.create(
            request.name, list(request.models), expires_at, limits_of(request.limits),
            request.priority or "standard")
        return apb.CreateTokenResponse(token=await self._shown(record), secret=secret)

    async def ListTokens(self, request: apb.ListTokensRequest, context: Ctx
                         ) -> apb.ListTokensResponse:
        now = time.time()
        tokens = await self.tokens.list(request.model or None, request.include_revoked)
        return apb.ListTokensResponse(tokens=[await self._shown(t, now) for t in tokens])

    async def GetToken(self, request: apb.GetTokenRequest, context: Ctx) -> apb.Token:
        return await self._shown(await self.tokens.get(request.id))

    async def RevokeToken(self, request: apb.RevokeTokenRequest, context: Ctx) -> apb.Token:
        return token_proto(await self.tokens.revoke(request.id))

    async def UpdateToken(self, request: apb.UpdateTokenRequest, context: Ctx) -> apb.Token:
        return await self._shown(await self.tokens.update(
            request.id, limits_of(request.limits), request.priority or None))

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
        out = apb.QueryUsageResponse(rows=[usage_proto(r) for r in rows])
        shown: dict[str, apb.Token] = {}
        for row in out.rows:
            if not row.token_id:
                continue
            if row.token_id not in shown:
                record = await self.tokens.store.get_token(row.token_id)
                shown[row.token_id] = await self._shown(record) if record is not None \
                    else apb.Token()
            row.limits.CopyFrom(shown[row.token_id].limits)
            row.remaining.CopyFrom(shown[row.token_id].remaining)
        return out

    async def ReloadConfig(self, request: apb.ReloadConfigRequest, context: Ctx
                           ) -> apb.ReloadConfigResponse:
        if self.reload is None:
            raise InvalidRequest("this gateway cannot reload its config")
        try:
            ids = await self.reload()
        except ConfigError as exc:
            log.error("config reload refused, the running models stay: %s", exc)
            raise InvalidRequest(f"the config was not reloaded: {exc}") from None
        return apb.ReloadConfigResponse(models=ids)

    async def ListModels(self, request: pb.ListModelsRequest, context: Ctx
                         ) -> pb.ListModelsResponse:
        task = TASK_NAME.get(request.task)
        return pb.ListModelsResponse(models=[
            e.admin_proto() for e in self.registry.entries() if task is None or e.serves(task)])
