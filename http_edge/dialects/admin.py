"""The ``admin`` dialect: the core's Admin service as JSON under ``/admin/``.

``POST /admin/tokens`` (``{"name", "models": [...] | "model", "expires_in": "30d" | seconds,
"expires_at": Unix seconds | ISO date, "limits": {"rpm", "tpm", "max_concurrency",
"daily_tokens", "monthly_tokens"}, "priority"}``, 201 with the token and its ``secret``, shown
once), ``PATCH /admin/tokens/{id}`` (``{"limits": {...}, "priority"}``: the limits replace the
old ones whole), ``GET /admin/tokens[?model=&include_revoked=true]``, ``GET /admin/tokens/{id}``
(each with its ``limits`` and what is ``remaining`` of them),
``DELETE /admin/tokens/{id}`` (or ``POST /admin/tokens/{id}/revoke``),
``GET /admin/usage[?token_id=&model=&since=24h|start=&end=&group_by=token|model|token_and_model]``
``GET /admin/models`` and ``POST /admin/reload`` (re-read the config file's models).

The caller's ``Authorization`` header goes to the core like any other; the core decides (the admin
credential, never a model token).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from gateway_common.core_api import (
    ADMIN_LIST_MODELS,
    CREATE_TOKEN,
    GET_TOKEN,
    LIST_TOKENS,
    QUERY_USAGE,
    RELOAD_CONFIG,
    REVOKE_TOKEN,
    UPDATE_TOKEN,
)
from gateway_common.durations import parse_duration, parse_expiry, parse_time
from http_edge.body import Fields, read_object
from http_edge.dialects.openai_wire import model_json
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.sse import DONE, frame
from http_edge.state import CONFIG, Dialect
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import inference_pb2 as pb

_GROUP_BY = {
    "token": apb.QueryUsageRequest.GROUP_BY_TOKEN,
    "model": apb.QueryUsageRequest.GROUP_BY_MODEL,
    "token_and_model": apb.QueryUsageRequest.GROUP_BY_TOKEN_AND_MODEL,
}
_CREATE_KEYS = frozenset({"name", "model", "models", "expires_in", "expires_at", "limits",
                          "priority"})
_UPDATE_KEYS = frozenset({"limits", "priority"})
LIMIT_NAMES = ("rpm", "tpm", "max_concurrency", "daily_tokens", "monthly_tokens")


def error_json(err: EdgeError, request_id: str) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.kind.type, "code": err.kind.code,
                      "param": err.param, "request_id": request_id}}


def stream_error(err: EdgeError, request_id: str) -> bytes:
    return frame(orjson.dumps(error_json(err, request_id))) + DONE


ADMIN = Dialect("admin", error_json, stream_error)


def _time(value: int) -> int | None:
    return value or None


def limits_json(limits: apb.TokenLimits) -> dict[str, int]:
    return {name: getattr(limits, name) for name in LIMIT_NAMES if limits.HasField(name)}


def token_json(t: apb.Token) -> dict[str, Any]:
    return {
        "id": t.id, "name": t.name, "prefix": t.prefix, "models": list(t.models),
        "created_at": t.created_at, "expires_at": _time(t.expires_at),
        "last_used_at": _time(t.last_used_at), "revoked_at": _time(t.revoked_at),
        "status": t.status, "priority": t.priority or "standard",
        "limits": limits_json(t.limits), "remaining": limits_json(t.remaining),
    }


def limits_request(value: Any) -> apb.TokenLimits:
    """``{"rpm": 60, ...}`` → TokenLimits (400 naming the bad field; null: no limit)."""
    if value is None:
        return apb.TokenLimits()
    if not isinstance(value, dict):
        raise EdgeError.bad_request("'limits' must be an object", param="limits")
    out = apb.TokenLimits()
    for name, v in value.items():
        if name not in LIMIT_NAMES:
            raise EdgeError.bad_request(
                f"unknown limit '{str(name)[:40]}' (expected: {', '.join(LIMIT_NAMES)})",
                param=f"limits.{str(name)[:40]}")
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise EdgeError.bad_request(f"'limits.{name}' must be a positive integer or null",
                                        param=f"limits.{name}")
        setattr(out, name, min(v, 2**63 - 1))
    return out


def _priority(body: dict[str, Any]) -> str:
    value = body.get("priority")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise EdgeError.bad_request("'priority' must be a string", param="priority")
    return value


def create_request(body: dict[str, Any]) -> apb.CreateTokenRequest:
    """The JSON body of ``POST /admin/tokens`` → CreateTokenRequest (400 naming the field)."""
    unknown = sorted(set(body) - _CREATE_KEYS)
    if unknown:
        raise EdgeError.bad_request(
            f"unknown field '{unknown[0]}' (expected: {', '.join(sorted(_CREATE_KEYS))})",
            param=unknown[0])
    f = Fields(body)
    req = apb.CreateTokenRequest(name=f.req_str("name"))
    models = f.str_or_list("models")
    model = f.str("model")
    if models is None and model is None:
        raise EdgeError.bad_request("'models' (a list of model ids, or \"*\") is required",
                                    param="models")
    req.models.extend([*(models or []), *([model] if model else [])])
    req.limits.CopyFrom(limits_request(body.get("limits")))
    req.priority = _priority(body)
    expires_in, expires_at = f.get("expires_in"), f.get("expires_at")
    try:
        if isinstance(expires_at, str):
            at = parse_expiry(expires_at)
            req.expires_at = int(at) if at is not None else 0
        elif expires_at is not None:
            req.expires_at = int(f.float("expires_at", 1) or 0)
        if isinstance(expires_in, str):
            req.expires_in_seconds = max(1, int(parse_duration(expires_in)))
        elif expires_in is not None:
            req.expires_in_seconds = max(1, int(f.float("expires_in", 1) or 0))
    except ValueError as exc:
        raise EdgeError.bad_request(str(exc),
                                    param="expires_at" if expires_at is not None else
                                    "expires_in") from None
    return req


def usage_request(query: Any) -> apb.QueryUsageRequest:
    req = apb.QueryUsageRequest(token_id=query.get("token_id", ""), model=query.get("model", ""))
    group = query.get("group_by", "token_and_model")
    if group not in _GROUP_BY:
        raise EdgeError.bad_request(
            f"'group_by' must be one of {', '.join(_GROUP_BY)}; got {group[:40]!r}",
            param="group_by")
    req.group_by = _GROUP_BY[group]
    try:
        if "since" in query:
            req.start_time = time.time() - parse_duration(query["since"])
        if "start" in query:
            req.start_time = parse_time(query["start"])
        if "end" in query:
            req.end_time = parse_time(query["end"])
    except ValueError as exc:
        raise EdgeError.bad_request(str(exc)) from None
    return req


def _flag(query: Any, name: str) -> bool:
    value = query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise EdgeError.bad_request(f"'{name}' must be true or false", param=name)
    return value in ("true", "1")


async def create_token(request: web.Request) -> web.Response:
    req = create_request(await read_object(request, request.app[CONFIG].limits.max_body_bytes))
    resp = await unary(request, CREATE_TOKEN, req)
    return json_response({**token_json(resp.token), "secret": resp.secret}, status=201)


async def list_tokens(request: web.Request) -> web.Response:
    req = apb.ListTokensRequest(model=request.query.get("model", ""),
                                include_revoked=_flag(request.query, "include_revoked"))
    resp = await unary(request, LIST_TOKENS, req)
    return json_response({"object": "list", "data": [token_json(t) for t in resp.tokens]})


async def get_token(request: web.Request) -> web.Response:
    resp = await unary(request, GET_TOKEN, apb.GetTokenRequest(id=request.match_info["id"]))
    return json_response(token_json(resp))


async def revoke_token(request: web.Request) -> web.Response:
    resp = await unary(request, REVOKE_TOKEN, apb.RevokeTokenRequest(id=request.match_info["id"]))
    return json_response(token_json(resp))


async def update_token(request: web.Request) -> web.Response:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    unknown = sorted(set(body) - _UPDATE_KEYS)
    if unknown:
        raise EdgeError.bad_request(
            f"unknown field '{unknown[0]}' (expected: {', '.join(sorted(_UPDATE_KEYS))})",
            param=unknown[0])
    req = apb.UpdateTokenRequest(id=request.match_info["id"], priority=_priority(body))
    req.limits.CopyFrom(limits_request(body.get("limits")))
    return json_response(token_json(await unary(request, UPDATE_TOKEN, req)))


async def usage(request: web.Request) -> web.Response:
    req = usage_request(request.query)
    resp = await unary(request, QUERY_USAGE, req)
    return json_response({"object": "list", "data": [{
        "token_id": r.token_id or None, "token_name": r.token_name or None,
        "model": r.model or None, "requests": r.requests, "errors": r.errors,
        "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
        "mean_latency_ms": round(r.mean_latency_ms, 3), "end_users": r.end_users,
        **({"limits": limits_json(r.limits), "remaining": limits_json(r.remaining)}
           if r.token_id else {}),
    } for r in resp.rows]})


def admin_model_json(m: pb.Model) -> dict[str, Any]:
    """A model as operators see it: with its provider, status and the state of each endpoint."""
    return {**model_json(m), "provider": m.provider, "status": m.status, "upstreams": [
        {"endpoint": u.endpoint, "state": u.state, "weight": u.weight, "in_flight": u.in_flight,
         "failures": u.failures, "ejections": u.ejections,
         "retry_in_seconds": round(u.retry_in_seconds, 3),
         "load": u.load if u.HasField("load") else None}
        for u in m.upstreams]}


async def reload_config(request: web.Request) -> web.Response:
    resp = await unary(request, RELOAD_CONFIG, apb.ReloadConfigRequest())
    return json_response({"status": "reloaded", "models": list(resp.models)})


async def list_models(request: web.Request) -> web.Response:
    resp = await unary(request, ADMIN_LIST_MODELS, pb.ListModelsRequest())
    return json_response({"object": "list", "data": [admin_model_json(m) for m in resp.models]})


def setup(app: web.Application) -> None:
    add_routes(app, ADMIN, [
        ("POST", "/admin/tokens", create_token),
        ("GET", "/admin/tokens", list_tokens),
        ("GET", "/admin/tokens/{id}", get_token),
        ("DELETE", "/admin/tokens/{id}", revoke_token),
        ("PATCH", "/admin/tokens/{id}", update_token),
        ("POST", "/admin/tokens/{id}/revoke", revoke_token),
        ("GET", "/admin/usage", usage),
        ("GET", "/admin/models", list_models),
        ("POST", "/admin/reload", reload_config),
    ])
