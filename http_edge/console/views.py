"""The console: a web page to manage each model's access tokens, copy working code and see usage
(SPEC §12), served by the edge under ``/console/``.

Pages are rendered on the server with Jinja2 (autoescaped: whatever a token's name holds shows as
text); a little plain JavaScript from ``static/`` adds copy buttons and confirmations (the
Content-Security-Policy allows no inline script or style). The console talks to the core only
through the Admin gRPC service, with the admin credential the operator signed in with.

Sessions: signing in with the admin credential (checked by the core) opens a server-side session in
this process, named by a random id in an HttpOnly, SameSite=Strict cookie scoped to ``/console``,
expiring after ``SESSION_SECONDS`` (a sliding expiry); every form carries the session's CSRF token.
Failed sign-ins are slowed per client address. A new token's secret is shown once, in the page that
answers the form that created it: never in a URL, a log, or any later page.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web
from grpc import aio

from gateway_common.core_api import (
    ADMIN_LIST_MODELS,
    CREATE_TOKEN,
    LIST_TOKENS,
    QUERY_USAGE,
    REQUEST_ID_KEY,
    REVOKE_TOKEN,
    UPDATE_TOKEN,
    CallOptions,
    Unary,
)
from gateway_common.durations import parse_expiry
from http_edge.console.snippets import snippets
from http_edge.errors import from_rpc_error
from http_edge.state import CORE, STATE
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import inference_pb2 as pb

HERE = Path(__file__).resolve().parent
COOKIE = "igw_console"
SESSION_SECONDS = 8 * 3600
MAX_SESSIONS = 1000
# Failed sign-ins: the first few free, then each waits longer (per client address).
FREE_FAILURES = 3
MAX_DELAY = 10.0
EXPIRIES = {"never": None, "7": 7, "30": 30, "90": 90}
LIMITS = (("rpm", "Requests per minute"), ("tpm", "Tokens per minute"),
          ("max_concurrency", "Requests at once"), ("daily_tokens", "Tokens per day"),
          ("monthly_tokens", "Tokens per month"))
SHORT = {"rpm": "rpm", "tpm": "tpm", "max_concurrency": "at once", "daily_tokens": "/day",
         "monthly_tokens": "/month"}
DAYS = 14
TASK_NAMES = {pb.TASK_CHAT: "chat", pb.TASK_COMPLETION: "completion",
              pb.TASK_EMBEDDING: "embedding", pb.TASK_RERANK: "rerank",
              pb.TASK_CLASSIFICATION: "classification", pb.TASK_TRANSCRIPTION: "transcription",
              pb.TASK_SPEECH: "speech", pb.TASK_IMAGE: "image",
              pb.TASK_TRANSLATION: "translation", pb.TASK_PREDICT: "predict"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class Session:
    admin: str
    csrf: str
    expires: float


@dataclass
class ConsoleState:
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, tuple[int, float]] = field(default_factory=dict)


STATE_KEY = web.AppKey("console", ConsoleState)
TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts else "-"


TEMPLATES.filters["when"] = _when


def _page(template: str, status: int = 200, **values: Any) -> web.Response:
    body = TEMPLATES.get_template(template).render(**values)
    return web.Response(text=body, status=status, content_type="text/html")


@web.middleware
async def headers_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    resp: web.StreamResponse = await handler(request)
    if request.path.startswith("/console"):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "no-referrer"
        if not request.path.startswith("/console/static/"):
            resp.headers["Cache-Control"] = "no-store"
    return resp


def _state(request: web.Request) -> ConsoleState:
    return request.app[STATE_KEY]


def _session(request: web.Request) -> Session | None:
    sid = request.cookies.get(COOKIE, "")
    session = _state(request).sessions.get(sid) if sid else None
    if session is None:
        return None
    now = time.time()
    if session.expires <= now:
        del _state(request).sessions[sid]
        return None
    session.expires = now + SESSION_SECONDS
    return session


def _required(request: web.Request) -> Session:
    session = _session(request)
    if session is None:
        raise web.HTTPSeeOther("/console/login")
    return session


async def _form(request: web.Request, session: Session) -> Any:
    """The posted form, after its CSRF token was checked (403 otherwise)."""
    form = await request.post()
    token = str(form.get("csrf", ""))
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise web.HTTPForbidden(text="the form is stale or was not sent by the console; "
                                "reload the page")
    return form


async def _call(request: web.Request, rpc: Unary[Any, Any], message: Any, admin: str) -> Any:
    """An Admin call with the session's credential; raises the core's error as an EdgeError."""
    options = CallOptions(30.0, (("authorization", f"Bearer {admin}"),
                                 (REQUEST_ID_KEY, request[STATE].request_id)))
    try:
        reply = await request.app[CORE].api.unary(rpc, message, options)
    except aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None
    return reply.message


async def login_page(request: web.Request) -> web.StreamResponse:
    if _session(request) is not None:
        raise web.HTTPSeeOther("/console/")
    return _page("login.html", error=None)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    credential = str(form.get("credential", "")).strip()
    state = _state(request)
    who = request.remote or "?"
    count, _ = state.failures.get(who, (0, 0.0))
    if count >= FREE_FAILURES:
        await asyncio.sleep(min(MAX_DELAY, 0.5 * 2 ** (count - FREE_FAILURES)))
    try:
        if not credential:
            raise ValueError
        await _call(request, ADMIN_LIST_MODELS, pb.ListModelsRequest(), credential)
    except Exception:
        state.failures[who] = (count + 1, time.time())
        if len(state.failures) > 10_000:
            state.failures.clear()
        return _page("login.html", status=401,
                     error="That is not the admin credential of this gateway.")
    state.failures.pop(who, None)
    now = time.time()
    for sid in [s for s, v in state.sessions.items() if v.expires <= now]:
        del state.sessions[sid]
    if len(state.sessions) >= MAX_SESSIONS:
        state.sessions.pop(next(iter(state.sessions)))
    sid = secrets.token_urlsafe(32)
    state.sessions[sid] = Session(credential, secrets.token_urlsafe(32), now + SESSION_SECONDS)
    resp = web.HTTPSeeOther("/console/")
    resp.set_cookie(COOKIE, sid, path="/console", httponly=True, samesite="Strict",
                    secure=request.secure, max_age=SESSION_SECONDS)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    session = _required(request)
    await _form(request, session)
    _state(request).sessions.pop(request.cookies.get(COOKIE, ""), None)
    resp = web.HTTPSeeOther("/console/login")
    resp.del_cookie(COOKIE, path="/console")
    raise resp


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def models(request: web.Request) -> web.StreamResponse:
    session = _required(request)
    listed = await _call(request, ADMIN_LIST_MODELS, pb.ListModelsRequest(), session.admin)
    tokens = await _call(request, LIST_TOKENS, apb.ListTokensRequest(), session.admin)
    rows = []
    for m in listed.models:
        active = sum(1 for t in tokens.tokens if t.status == "active"
                     and ("*" in t.models or m.id in t.models))
        up = sum(1 for u in m.upstreams if u.state == "up")
        health = f"{up} of {len(m.upstreams)} up" if m.upstreams else m.status or "ready"
        rows.append({"id": m.id, "task": TASK_NAMES.get(m.task, "?"), "provider": m.provider,
                     "health": health, "status": m.status, "tokens": active})
    return _page("models.html", session=session, models=rows)


async def _model(request: web.Request, session: Session) -> pb.Model:
    listed = await _call(request, ADMIN_LIST_MODELS, pb.ListModelsRequest(), session.admin)
    wanted = request.match_info["model"]
    for m in listed.models:
        if m.id == wanted:
            model: pb.Model = m
            return model
    raise web.HTTPNotFound(text=f"no model named {wanted[:100]!r}")


async def _model_page(request: web.Request, session: Session, *, created: Any = None,
                      secret: str | None = None, error: str | None = None,
                      status: int = 200) -> web.Response:
    model = await _model(request, session)
    show_revoked = request.query.get("revoked") == "1"
    tokens = await _call(request, LIST_TOKENS, apb.ListTokensRequest(
        model=model.id, include_revoked=show_revoked), session.admin)
    usage = await _call(request, QUERY_USAGE, apb.QueryUsageRequest(
        model=model.id, group_by=apb.QueryUsageRequest.GROUP_BY_TOKEN_AND_MODEL,
        start_time=time.time() - DAYS * 86400), session.admin)
    task = TASK_NAMES.get(model.task, "chat")
    return _page("model.html", status=status, session=session, model=model, task=task,
                 tokens=[_token_row(t) for t in tokens.tokens], show_revoked=show_revoked,
                 created=created, secret=secret, error=error, usage=_usage_rows(usage.rows),
                 daily=await _daily(request, session, model.id), limits=LIMITS,
                 snippets=snippets(task, _base(request), model.id, secret))


def _token_row(t: apb.Token) -> dict[str, Any]:
    limits = {name: getattr(t.limits, name) for name, _ in LIMITS if t.limits.HasField(name)}
    left = {name: getattr(t.remaining, name) for name, _ in LIMITS
            if t.remaining.HasField(name)}
    shown = [f"{v} {SHORT[k]}" + (f" ({left[k]} left)" if k in left else "")
             for k, v in limits.items()]
    return {"id": t.id, "name": t.name, "prefix": t.prefix, "created_at": t.created_at,
            "expires_at": t.expires_at, "last_used_at": t.last_used_at, "status": t.status,
            "limits": limits, "limits_text": ", ".join(shown) or "none"}


async def _daily(request: web.Request, session: Session, model: str
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's usage per UTC day over the last ``DAYS`` days, for the charts."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    starts = [today - 86400 * i for i in range(DAYS - 1, -1, -1)]
    replies = await asyncio.gather(*(_call(request, QUERY_USAGE, apb.QueryUsageRequest(
        model=model, group_by=apb.QueryUsageRequest.GROUP_BY_TOKEN_AND_MODEL,
        start_time=start, end_time=start + 86400), session.admin) for start in starts))
    days = []
    for start, reply in zip(starts, replies, strict=True):
        rows = list(reply.rows)
        requests = sum(r.requests for r in rows)
        days.append({"day": datetime.fromtimestamp(start, UTC).strftime("%m-%d"),
                     "requests": requests, "errors": sum(r.errors for r in rows),
                     "tokens": sum(r.prompt_tokens + r.completion_tokens for r in rows),
                     "latency": round(sum(r.mean_latency_ms * r.requests for r in rows)
                                      / requests, 1) if requests else 0.0})
    for key in ("requests", "tokens", "latency"):
        peak = max(d[key] for d in days) or 1
        for d in days:
            d[f"{key}_h"] = (round(100 * d[key] / peak) // 5) * 5 if d[key] else 0
    return days, _per_token(list(replies), [d["day"] for d in days])


def _per_token(replies: list[Any], labels: list[str]) -> list[dict[str, Any]]:
    """Requests per token per day: one row of columns per token."""
    names: dict[str, str] = {}
    counts: dict[str, list[int]] = {}
    for i, reply in enumerate(replies):
        for r in reply.rows:
            key = r.token_id or "-"
            names[key] = r.token_name or r.token_id or "(no token)"
            counts.setdefault(key, [0] * len(replies))[i] += r.requests
    peak = max([c for row in counts.values() for c in row] or [1]) or 1
    return [{"token": names[k], "total": sum(row),
             "days": [{"day": labels[i], "requests": c,
                       "h": (round(100 * c / peak) // 5) * 5 if c else 0}
                      for i, c in enumerate(row)]}
            for k, row in sorted(counts.items(), key=lambda kv: -sum(kv[1]))]


def _usage_rows(rows: Any) -> list[dict[str, Any]]:
    out = []
    peak = max([r.requests for r in rows] or [1]) or 1
    for r in rows:
        out.append({"token": r.token_name or r.token_id or "(no token)",
                    "requests": r.requests, "errors": r.errors,
                    "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens,
                    "latency": round(r.mean_latency_ms, 1),
                    "width": max(1, round(100 * r.requests / peak))})
    return out


async def model_page(request: web.Request) -> web.StreamResponse:
    return await _model_page(request, _required(request))


async def create_token(request: web.Request) -> web.StreamResponse:
    session = _required(request)
    form = await _form(request, session)
    model = await _model(request, session)
    name = str(form.get("name", "")).strip()
    expiry = str(form.get("expiry", "never"))
    req = apb.CreateTokenRequest(name=name, models=[model.id])
    try:
        if expiry == "date":
            at = parse_expiry(str(form.get("date", "")))
            req.expires_at = int(at or 0)
        elif expiry in EXPIRIES:
            days = EXPIRIES[expiry]
            req.expires_in_seconds = days * 86400 if days else 0
        else:
            raise ValueError("choose an expiry")
    except ValueError as exc:
        return await _model_page(request, session, error=str(exc), status=400)
    try:
        resp = await _call(request, CREATE_TOKEN, req, session.admin)
    except web.HTTPException:
        raise
    except Exception as exc:  # the core's refusal (a name too long, a date in the past)
        return await _model_page(request, session, error=getattr(exc, "message", str(exc)),
                                 status=getattr(exc, "status", 400))
    return await _model_page(request, session, created=resp.token, secret=resp.secret)


async def update_limits(request: web.Request) -> web.StreamResponse:
    session = _required(request)
    form = await _form(request, session)
    model = await _model(request, session)
    limits = apb.TokenLimits()
    for name, label in LIMITS:
        value = str(form.get(name, "")).strip()
        if not value:
            continue
        if not value.isdigit() or int(value) < 1:
            return await _model_page(request, session, status=400,
                                     error=f"{label} must be a whole number of 1 or more "
                                     "(empty: no limit)")
        setattr(limits, name, int(value))
    try:
        await _call(request, UPDATE_TOKEN, apb.UpdateTokenRequest(
            id=request.match_info["token"], limits=limits), session.admin)
    except web.HTTPException:
        raise
    except Exception as exc:
        return await _model_page(request, session, error=getattr(exc, "message", str(exc)),
                                 status=getattr(exc, "status", 400))
    raise web.HTTPSeeOther(f"/console/models/{model.id}")


async def revoke_token(request: web.Request) -> web.StreamResponse:
    session = _required(request)
    await _form(request, session)
    model = await _model(request, session)
    await _call(request, REVOKE_TOKEN, apb.RevokeTokenRequest(id=request.match_info["token"]),
                session.admin)
    raise web.HTTPSeeOther(f"/console/models/{model.id}")


async def root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/console/")


def setup(app: web.Application) -> None:
    app[STATE_KEY] = ConsoleState()
    app.middlewares.insert(0, headers_middleware)
    r = app.router
    r.add_get("/console", root)
    r.add_get("/console/", models)
    r.add_get("/console/login", login_page)
    r.add_post("/console/login", login)
    r.add_post("/console/logout", logout)
    r.add_get("/console/models/{model}", model_page)
    r.add_post("/console/models/{model}/tokens", create_token)
    r.add_post("/console/models/{model}/tokens/{token}/revoke", revoke_token)
    r.add_post("/console/models/{model}/tokens/{token}/limits", update_limits)
    r.add_static("/console/static/", HERE / "static", follow_symlinks=False)



