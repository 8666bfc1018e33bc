"""``inference-gateway tokens create|list|update|revoke``: access tokens from the command line.

Against the local store (the SQLite file in ``--data-dir``, or the PostgreSQL of ``--config``),
or a running gateway: ``--url http://host:8080`` (the edge's ``/admin`` routes) or ``--core
host:50051`` (the Admin gRPC service), with the admin credential from ``--admin-token`` or the
environment variable named by ``auth.admin_token_env`` (``GATEWAY_ADMIN_TOKEN``).

A new token's secret is printed once; only its hash is stored. Limits (``--rpm``, ``--tpm``,
``--max-concurrency``, ``--daily-tokens``, ``--monthly-tokens``) and the priority class are set at
creation and changed with ``update``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import grpc
from grpc import aio

from gateway_common.config import PRIORITIES, ConfigError, GatewayConfig, RateLimits, load_config
from gateway_common.defaults import default_config
from gateway_common.durations import parse_expiry
from gateway_core.auth.admin import token_proto
from gateway_core.auth.service import TokenService
from gateway_core.auth.store import open_store
from gateway_core.errors import GatewayError, InvalidRequest
from http_edge.dialects.admin import token_json
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc

EXIT_CONFIG = 2
TIMEOUT = 30.0

Token = dict[str, Any]
# Limits by name (rpm, tpm, max_concurrency, daily_tokens, monthly_tokens), as /admin shows them.
Limits = dict[str, int]


class CommandError(Exception):
    """A failure to report in one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


LIMIT_FLAGS = {"rpm": "rpm", "tpm": "tpm", "max_concurrency": "max_concurrency",
               "daily_tokens": "daily_tokens", "monthly_tokens": "monthly_tokens"}


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _limits(args: argparse.Namespace) -> Limits:
    return {name: getattr(args, name) for name in LIMIT_FLAGS if getattr(args, name, None)}


def add_parser(sub: Any) -> None:
    tokens = sub.add_parser("tokens", help="create, list, update and revoke access tokens")
    actions = tokens.add_subparsers(dest="action", metavar="ACTION")

    def target(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="PATH", help="YAML config (store and models)")
        p.add_argument("--data-dir", help="the local store's directory (default ./data)")
        p.add_argument("--url", help="a running gateway's HTTP edge, e.g. http://127.0.0.1:8080")
        p.add_argument("--core", metavar="HOST:PORT", help="a running gateway's gRPC core")
        p.add_argument("--admin-token", help="the admin credential (default: the environment "
                       "variable named by auth.admin_token_env, GATEWAY_ADMIN_TOKEN)")
        p.add_argument("--json", action="store_true", help="print JSON for scripts")

    create = actions.add_parser("create", help="create a token; its secret is shown once")
    create.add_argument("--name", required=True, help="what the token is for")
    create.add_argument("--model", action="append", required=True, dest="models",
                        help="a model it may call (repeat for several; '*' for every model)")
    create.add_argument("--expires", default="never",
                        help="30d, 12h, 90m, an ISO date, or never (default)")
    target(create)

    def limit_flags(p: argparse.ArgumentParser) -> None:
        for flag, what in (("--rpm", "requests per minute"), ("--tpm", "tokens per minute"),
                           ("--max-concurrency", "requests in flight at once"),
                           ("--daily-tokens", "tokens per UTC day"),
                           ("--monthly-tokens", "tokens per UTC calendar month")):
            p.add_argument(flag, type=_positive, metavar="N", help=f"limit: {what}")
        p.add_argument("--priority", choices=PRIORITIES,
                       help="the highest priority class its requests may ask for")

    limit_flags(create)
    update = actions.add_parser("update", help="change a token's limits and priority (the "
                                "limits given replace the old ones whole)")
    update.add_argument("id", help="the token's id (tok_...)")
    limit_flags(update)
    target(update)
    listing = actions.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--model", help="only tokens that may call this model")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    target(listing)
    revoke = actions.add_parser("revoke", help="revoke a token (refused from the next request)")
    revoke.add_argument("id", help="the token's id (tok_...)")
    target(revoke)


# -- backends: each returns token dicts in the shape of the edge's /admin JSON -----------------


class Backend:
    async def create(self, name: str, models: list[str], expires_at: float | None,
                     limits: Limits, priority: str | None) -> tuple[Token, str]:
        raise NotImplementedError

    async def update(self, token_id: str, limits: Limits, priority: str | None) -> Token:
        raise NotImplementedError

    async def list(self, model: str | None, include_revoked: bool) -> list[Token]:
        raise NotImplementedError

    async def revoke(self, token_id: str) -> Token:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class LocalBackend(Backend):
    """The store itself: whoever can read the data dir (or the DSN) is the administrator."""

    def __init__(self, config: GatewayConfig) -> None:
        def resolve(name: str) -> str | None:
            m = config.model(name)
            return m.id if m is not None else None

        self.store = open_store(config)
        self.service = TokenService(self.store, resolve)

    async def open(self) -> None:
        await self.store.open()

    @staticmethod
    def _json(record: Any) -> Token:
        return token_json(token_proto(record))

    async def create(self, name: str, models: list[str], expires_at: float | None,
                     limits: Limits, priority: str | None) -> tuple[Token, str]:
        record, secret = await self.service.create(name, models, expires_at,
                                                   RateLimits(**limits), priority or "standard")
        return self._json(record), secret

    async def update(self, token_id: str, limits: Limits, priority: str | None) -> Token:
        return self._json(await self.service.update(token_id, RateLimits(**limits), priority))

    async def list(self, model: str | None, include_revoked: bool) -> list[Token]:
        return [self._json(r) for r in await self.service.list(model, include_revoked)]

    async def revoke(self, token_id: str) -> Token:
        return self._json(await self.service.revoke(token_id))

    async def close(self) -> None:
        await self.store.close()


class CoreBackend(Backend):
    """The core's Admin gRPC service."""

    def __init__(self, address: str, admin_token: str) -> None:
        self.channel = aio.insecure_channel(address)
        self.stub = apb_grpc.AdminStub(self.channel)
        self.metadata = (("authorization", f"Bearer {admin_token}"),)

    async def create(self, name: str, models: list[str], expires_at: float | None,
                     limits: Limits, priority: str | None) -> tuple[Token, str]:
        resp = await self.stub.CreateToken(apb.CreateTokenRequest(
            name=name, models=models, expires_at=int(expires_at or 0),
            limits=apb.TokenLimits(**limits), priority=priority or ""),
            timeout=TIMEOUT, metadata=self.metadata)
        return token_json(resp.token), resp.secret

    async def update(self, token_id: str, limits: Limits, priority: str | None) -> Token:
        return token_json(await self.stub.UpdateToken(apb.UpdateTokenRequest(
            id=token_id, limits=apb.TokenLimits(**limits), priority=priority or ""),
            timeout=TIMEOUT, metadata=self.metadata))

    async def list(self, model: str | None, include_revoked: bool) -> list[Token]:
        resp = await self.stub.ListTokens(apb.ListTokensRequest(
            model=model or "", include_revoked=include_revoked),
            timeout=TIMEOUT, metadata=self.metadata)
        return [token_json(t) for t in resp.tokens]

    async def revoke(self, token_id: str) -> Token:
        return token_json(await self.stub.RevokeToken(
            apb.RevokeTokenRequest(id=token_id), timeout=TIMEOUT, metadata=self.metadata))

    async def close(self) -> None:
        await self.channel.close()


class HttpBackend(Backend):
    """The edge's ``/admin`` routes."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.base = url.rstrip("/")
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=aiohttp.ClientTimeout(total=TIMEOUT))

    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            async with self.session.request(method, f"{self.base}{path}", **kw) as resp:
                try:
                    body = await resp.json(content_type=None)
                except ValueError:
                    body = None
                status, reason = resp.status, resp.reason
        except aiohttp.ClientError as exc:
            raise CommandError(f"cannot reach {self.base}: {exc}") from None
        if status >= 400:
            message = (body or {}).get("error", {}).get("message") if isinstance(
                body, dict) else None
            raise CommandError(f"HTTP {status}: {message or reason}",
                               EXIT_CONFIG if status == 400 else 1)
        return body

    async def create(self, name: str, models: list[str], expires_at: float | None,
                     limits: Limits, priority: str | None) -> tuple[Token, str]:
        payload: dict[str, Any] = {"name": name, "models": models, "limits": limits}
        if priority:
            payload["priority"] = priority
        if expires_at is not None:
            payload["expires_at"] = int(expires_at)
        body = await self._call("POST", "/admin/tokens", json=payload)
        secret = body.pop("secret")
        return body, secret

    async def list(self, model: str | None, include_revoked: bool) -> list[Token]:
        params = {"include_revoked": "true" if include_revoked else "false"}
        if model:
            params["model"] = model
        body = await self._call("GET", "/admin/tokens", params=params)
        return list(body["data"])

    async def revoke(self, token_id: str) -> Token:
        return dict(await self._call("DELETE", f"/admin/tokens/{quote(token_id, safe='')}"))

    async def update(self, token_id: str, limits: Limits, priority: str | None) -> Token:
        payload: dict[str, Any] = {"limits": limits}
        if priority:
            payload["priority"] = priority
        return dict(await self._call("PATCH", f"/admin/tokens/{quote(token_id, safe='')}",
                                     json=payload))

    async def close(self) -> None:
        await self.session.close()


# -- output ------------------------------------------------------------------------------------


def _when(ts: int | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _print_table(tokens: list[Token]) -> None:
    rows = [("ID", "NAME", "PREFIX", "MODELS", "CREATED", "EXPIRES", "LAST USED", "STATUS",
             "LIMITS (LEFT)")]
    for t in tokens:
        models = ",".join(t["models"])
        rows.append((t["id"], t["name"], t["prefix"] + "...",
                     models if len(models) <= 40 else models[:37] + "...",
                     _when(t["created_at"]), _when(t["expires_at"]) if t["expires_at"]
                     else "never", _when(t["last_used_at"]), t["status"], _limits_text(t)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


_SHORT = {"rpm": "rpm", "tpm": "tpm", "max_concurrency": "concurrency",
          "daily_tokens": "day", "monthly_tokens": "month"}


def _limits_text(t: Token) -> str:
    """``rpm 60 (59), tpm 100000 (99950)``: each limit and what is left of it."""
    limits = t.get("limits") or {}
    left = t.get("remaining") or {}
    parts = []
    for name, value in limits.items():
        rest = f" ({left[name]})" if name in left else ""
        parts.append(f"{_SHORT.get(name, name)} {value}{rest}")
    return ", ".join(parts) or "-"


def print_created(token: Token, secret: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**token, "secret": secret}))
        return
    expiry = f"expires {_when(token['expires_at'])} UTC" if token["expires_at"] \
        else "never expires"
    print(f"Created token {token['id']} '{token['name']}' for {', '.join(token['models'])} "
          f"({expiry}).")
    print("Its secret is shown this once and cannot be shown again (only a hash is stored):")
    print(f"  {secret}")


def print_bootstrap(bootstrap: Any, config: GatewayConfig, grpc_port: int,
                    http_port: int | None) -> None:
    """On a fresh store, print the credentials made for it, once (never to the log)."""
    admin, token, secret = bootstrap.admin_secret, bootstrap.token, bootstrap.token_secret
    if admin is None and secret is None:
        return
    host = config.listen.host
    where = config.storage.data_dir if config.storage.backend == "sqlite" else "the database"
    lines = ["", f"New token store in {where}. These secrets are shown this once; only their "
             "hashes are kept:"]
    if admin is not None:
        lines.append(f"  admin credential  {admin}")
        lines.append(f"      for /admin/... and `inference-gateway tokens ... --url/--core` "
                     f"(or set ${config.auth.admin_token_env})")
    if secret is not None:
        models = ", ".join(token.models)
        if len(models) > 70:
            models = f"{len(token.models)} models"
        lines.append(f"  access token      {secret}")
        lines.append(f"      '{token.name}' ({token.id}) for {models}")
        if http_port is not None:
            lines.append(f'  try: curl -H "Authorization: Bearer {secret}" '
                         f"http://{host}:{http_port}/v1/models")
        else:
            lines.append(f"  gRPC: metadata ('authorization', 'Bearer <token>') on {host}:"
                         f"{grpc_port}")
    print("\n".join([*lines, ""]), flush=True)


# -- command -----------------------------------------------------------------------------------


# In the embedded store's directory, ``serve`` and ``core`` note the config file they run with,
# so that ``tokens`` on that directory knows its models without ``--config``.
CONFIG_NOTE = "config-path"


def note_config(config: GatewayConfig, path: str | None) -> None:
    """Note ``path`` (None: the embedded defaults) in the data dir of a SQLite store."""
    if config.storage.backend != "sqlite":
        return
    note = Path(config.storage.data_dir) / CONFIG_NOTE
    if path is None:
        note.unlink(missing_ok=True)
        return
    note.parent.mkdir(parents=True, exist_ok=True)
    note.write_text(str(Path(path).resolve()))


def _config_path(args: argparse.Namespace) -> str | None:
    """``--config``, or the config the gateway on ``--data-dir`` noted (None: neither)."""
    if args.config:
        return str(args.config)
    note = Path(args.data_dir or default_config().storage.data_dir) / CONFIG_NOTE
    if not note.is_file():
        return None
    path = note.read_text().strip()
    if not Path(path).is_file():
        raise CommandError(f"the gateway on this data dir ran with {path}, which is gone: give "
                           "its config with --config PATH", EXIT_CONFIG)
    return path


def _config(args: argparse.Namespace) -> tuple[GatewayConfig, str | None]:
    """The config to work with, and the file it came from (None: the embedded defaults)."""
    path = _config_path(args)
    config = load_config(path) if path else default_config()
    if args.data_dir:
        config = dataclasses.replace(
            config, storage=dataclasses.replace(config.storage, data_dir=args.data_dir))
    return config, path


def _check_models(models: list[str], config: GatewayConfig) -> None:
    """On the embedded defaults, a model they lack means the config is missing: say so."""
    for name in models:
        if name != "*" and config.model(name) is None:
            raise CommandError(
                f"the model '{name}' is not one of the embedded mock models, and no config says "
                "which models the gateway serves: give its config with --config PATH (or ask "
                "the running gateway with --url or --core)", EXIT_CONFIG)


async def _backend(args: argparse.Namespace, config: GatewayConfig) -> Backend:
    if args.url and args.core:
        raise CommandError("give --url or --core, not both", EXIT_CONFIG)
    if args.url or args.core:
        admin = args.admin_token or os.environ.get(config.auth.admin_token_env, "")
        if not admin:
            raise CommandError(
                f"the admin credential is needed: --admin-token or ${config.auth.admin_token_env}",
                EXIT_CONFIG)
        return HttpBackend(args.url, admin) if args.url else CoreBackend(args.core, admin)
    local = LocalBackend(config)
    await local.open()
    return local


async def _run(args: argparse.Namespace, config: GatewayConfig, source: str | None) -> int:
    backend = await _backend(args, config)
    try:
        if args.action == "create":
            if source is None and isinstance(backend, LocalBackend):
                _check_models(args.models, config)
            try:
                expires_at = parse_expiry(args.expires)
            except ValueError as exc:
                raise CommandError(str(exc), EXIT_CONFIG) from None
            if expires_at is not None and expires_at <= time.time():
                raise CommandError("the expiry is in the past", EXIT_CONFIG)
            token, secret = await backend.create(args.name, args.models, expires_at,
                                                 _limits(args), args.priority)
            print_created(token, secret, args.json)
        elif args.action == "update":
            token = await backend.update(args.id, _limits(args), args.priority)
            if args.json:
                print(json.dumps(token))
            else:
                print(f"Updated token {token['id']} '{token['name']}': limits "
                      f"{_limits_text(token)}, priority {token['priority']}; from the next "
                      "request on.")
        elif args.action == "list":
            tokens = await backend.list(args.model, args.all)
            if args.json:
                print(json.dumps(tokens))
            elif tokens:
                _print_table(tokens)
            else:
                print("No tokens.")
        else:
            token = await backend.revoke(args.id)
            if args.json:
                print(json.dumps(token))
            else:
                print(f"Revoked token {token['id']} '{token['name']}': it is refused from the "
                      "next request on.")
    finally:
        await backend.close()
    return 0


def _guarded(fn: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(fn())
    except CommandError as exc:
        print(f"tokens: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"tokens: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except grpc.aio.AioRpcError as exc:
        print(f"tokens: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return EXIT_CONFIG if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
    except GatewayError as exc:
        print(f"tokens: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, InvalidRequest) else 1
    except OSError as exc:
        print(f"tokens: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    if args.action is None:
        print("tokens: give an action: create, list or revoke", file=sys.stderr)
        return EXIT_CONFIG
    try:
        config, source = _config(args)
    except ConfigError as exc:
        print(f"tokens: invalid config: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except CommandError as exc:
        print(f"tokens: {exc}", file=sys.stderr)
        return exc.code
    return _guarded(lambda: _run(args, config, source))
