"""Wires auth into the core: the store, the admin credential, the interceptors and the Admin service.

On the first start of a fresh store, an admin credential (unless one comes from the environment)
and an access token for the configured models are made; their secrets are handed to the command
that started the core (``AuthRuntime.bootstrap``) to print once, and never logged.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from grpc import aio

from gateway_common.config import ConfigError, GatewayConfig
from gateway_core.auth.admin import AdminServicer, Reloader
from gateway_core.auth.authenticator import AdminGuard, Authenticator
from gateway_core.auth.interceptor import AdminAuthInterceptor, AuthInterceptor
from gateway_core.auth.jwt_auth import JwtVerifier
from gateway_core.auth.records import ALL_MODELS, TokenRecord, hash_secret, new_admin_secret
from gateway_core.auth.service import Resolver, TokenService, make_token
from gateway_core.auth.store import TokenStore, open_store
from gateway_core.auth.usage import UsageInterceptor, UsageRecorder
from gateway_core.errors import ModelNotFound
from gateway_core.limits.limiter import Limiter
from gateway_core.registry import ModelRegistry
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc

log = logging.getLogger(__name__)

ADMIN_SERVICE = apb.DESCRIPTOR.services_by_name["Admin"].full_name
MIN_ADMIN_CHARS = 16


@dataclass(frozen=True)
class Bootstrap:
    """Secrets made on this start (a fresh store), to be shown once by the caller."""

    admin_secret: str | None = None
    token: TokenRecord | None = None
    token_secret: str | None = None


class AuthRuntime:
    """The running auth parts of one core; ``close()`` flushes usage and last-used times."""

    def __init__(self, store: TokenStore, authenticator: Authenticator, usage: UsageRecorder,
                 tokens: TokenService, guard: AdminGuard, registry: ModelRegistry,
                 bootstrap: Bootstrap) -> None:
        self.store = store
        self.authenticator = authenticator
        self.usage = usage
        self.tokens = tokens
        self.bootstrap = bootstrap
        # Outermost first; they run inside the metrics and error interceptors.
        self.interceptors: list[aio.ServerInterceptor] = [
            UsageInterceptor(usage), AuthInterceptor(authenticator, registry),
            AdminAuthInterceptor(guard),
        ]
        self._registry = registry

    def add_to_server(self, server: aio.Server, limiter: Limiter | None = None,
                      reload: Reloader | None = None) -> list[str]:
        """Add the Admin service; returns the service names it adds."""
        apb_grpc.add_AdminServicer_to_server(
            AdminServicer(self.tokens, self._registry, self.usage, limiter, reload), server)
        return [ADMIN_SERVICE]

    async def close(self) -> None:
        await self.usage.close()
        await self.authenticator.close()
        await self.store.close()


def registry_resolver(registry: ModelRegistry) -> Resolver:
    def resolve(name: str) -> str | None:
        try:
            return registry.get(name).id
        except ModelNotFound:
            return None

    return resolve


def _env_admin(config: GatewayConfig) -> str | None:
    name = config.auth.admin_token_env
    value = os.environ.get(name) if name else None
    if value is None or value == "":
        return None
    if len(value) < MIN_ADMIN_CHARS or not value.isascii() or not value.isprintable() \
            or " " in value:
        raise ConfigError("auth.admin_token_env",
                          f"the environment variable {name} must hold at least "
                          f"{MIN_ADMIN_CHARS} printable characters without spaces")
    return value


async def start_auth(config: GatewayConfig, registry: ModelRegistry) -> AuthRuntime:
    """Open the store (creating it on first start) and build the auth parts of the core."""
    env_admin = _env_admin(config)
    jwt = JwtVerifier(config.auth.jwt) if config.auth.jwt.enabled else None
    store = open_store(config)
    try:
        await store.open()
    except (OSError, ConfigError):
        await store.close()
        raise
    except Exception as exc:  # a newer schema, a corrupt file, a refused login: say so, briefly
        await store.close()
        raise OSError(f"cannot open the token store ({store.kind}): {exc}") from exc
    try:
        admin_secret = None if env_admin else new_admin_secret()
        models = tuple(e.id for e in registry.entries()) or (ALL_MODELS,)
        initial, token_secret = make_token("default", models, None)
        result = await store.bootstrap(
            hash_secret(admin_secret) if admin_secret else None, initial)
        admin_hash = hash_secret(env_admin) if env_admin else result.admin_hash
        if admin_hash is None:  # pragma: no cover - bootstrap stores one when none is given
            raise RuntimeError("no admin credential")
        bootstrap = Bootstrap(
            admin_secret=admin_secret if result.admin_created else None,
            token=initial if result.initial_created else None,
            token_secret=token_secret if result.initial_created else None,
        )
        if result.initial_created:
            log.info("fresh token store: created the access token %s for %d models",
                     initial.id, len(models))
        authenticator = Authenticator(store, jwt, cache_seconds=config.auth.cache_seconds)
        usage = UsageRecorder(store)
        tokens = TokenService(store, registry_resolver(registry),
                              on_revoke=authenticator.invalidate)
        await authenticator.start()
        await usage.start()
    except BaseException:
        await store.close()
        raise
    return AuthRuntime(store, authenticator, usage, tokens, AdminGuard(admin_hash), registry,
                       bootstrap)
