"""The hot path: call metadata → the caller's identity, and the model-scope check.

For a stored token the common case is one SHA-256, the store's synchronous change check, a dict
lookup and a constant-time compare: no database round trip. A cache entry is trusted while the
store's ``generation()`` is unchanged and for at most ``auth.cache_seconds``; a revocation (here
or in any process sharing the store) changes the generation, so it is seen by the next request.
Last-used times are collected in memory and written in one batch every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gateway_core.auth.failures import forbidden, unauthenticated
from gateway_core.auth.identity import Identity
from gateway_core.auth.jwt_auth import JwtVerifier
from gateway_core.auth.records import PREFIX, TokenRecord, hash_secret, is_token_secret
from gateway_core.auth.store import TokenStore
from gateway_core.errors import ModelNotFound
from gateway_core.registry import ModelRegistry

log = logging.getLogger(__name__)

_CACHE_MAX = 50_000
_MAX_CREDENTIAL = 8192


def credential(metadata: Iterable[Any] | None) -> str:
    """The bearer credential from ``authorization: Bearer <x>`` or else ``x-api-key: <x>``;
    raises UNAUTHENTICATED (missing or malformed)."""
    auth = api_key = None
    for key, value in metadata or ():
        if key == "authorization":
            auth = value
        elif key == "x-api-key":
            api_key = value
    if auth is not None:
        scheme, _, token = str(auth).partition(" ")
        if scheme.lower() != "bearer":
            raise unauthenticated("malformed")
        token = token.strip()
    elif api_key is not None:
        token = str(api_key).strip()
    else:
        raise unauthenticated("missing")
    if not token or len(token) > _MAX_CREDENTIAL or not token.isascii() \
            or not token.isprintable() or " " in token:
        raise unauthenticated("malformed")
    return token


@dataclass(frozen=True, slots=True)
class _Entry:
    record: TokenRecord | None
    identity: Identity | None
    fetched: float  # time.monotonic()


class Authenticator:
    """Stored tokens (``igw_...``) through a validated cache; anything else as a JWT when JWT
    mode is on. Both modes can be on at once."""

    def __init__(self, store: TokenStore, jwt: JwtVerifier | None, *, cache_seconds: float,
                 touch_seconds: float = 5.0) -> None:
        self.store = store
        self.jwt = jwt
        self.cache_seconds = cache_seconds
        self.touch_seconds = touch_seconds
        self._entries: dict[str, _Entry] = {}
        self._generation: int | None = None
        self._last_used: dict[str, float] = {}
        self._toucher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._toucher = asyncio.create_task(self._touch_loop())

    async def close(self) -> None:
        if self._toucher is not None:
            self._toucher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._toucher
        await self.flush_last_used()

    def invalidate(self, token_id: str) -> None:
        """Forget a token at once (after a revocation made by this process)."""
        self._entries = {h: e for h, e in self._entries.items()
                         if e.record is None or e.record.id != token_id}

    async def authenticate(self, metadata: Iterable[Any] | None) -> Identity:
        token = credential(metadata)
        if token.startswith(PREFIX):
            if not is_token_secret(token):
                raise unauthenticated("malformed")
            return await self._stored(token)
        if self.jwt is not None:
            return self.jwt.verify(token)
        raise unauthenticated("unknown")

    async def _stored(self, secret: str) -> Identity:
        digest = hash_secret(secret)
        generation = self.store.generation()
        if generation is None or generation != self._generation:
            self._entries.clear()
            self._generation = generation
        now = time.monotonic()
        entry = self._entries.get(digest)
        if entry is None or now - entry.fetched > self.cache_seconds:
            record = await self.store.find_token(digest)
            identity = None if record is None else Identity.of_models(
                record.id, record.name, record.models, limits=record.limits,
                priority=record.priority)
            entry = _Entry(record, identity, now)
            if len(self._entries) >= _CACHE_MAX:
                self._entries.clear()
            self._entries[digest] = entry
        record = entry.record
        if record is None or entry.identity is None \
                or not hmac.compare_digest(record.hash, digest):
            raise unauthenticated("unknown")
        if record.revoked_at is not None:
            raise unauthenticated("revoked")
        wall = time.time()
        if record.expired(wall):
            raise unauthenticated("expired")
        self._last_used[record.id] = wall
        return entry.identity

    async def flush_last_used(self) -> None:
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        try:
            await self.store.touch_tokens(batch)
        except Exception as exc:  # the next flush will carry newer times anyway
            log.warning("cannot record tokens' last use: %s", exc)

    async def _touch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.touch_seconds)
            await self.flush_last_used()


def authorize(identity: Identity, name: str, registry: ModelRegistry) -> None:
    """PERMISSION_DENIED unless ``identity`` may call the model named ``name`` (an id or alias).
    An empty name is left to the servicer, which says the request names no model."""
    if identity.models is None or not name:
        return
    try:
        model_id = registry.get(name).id
    except ModelNotFound:
        model_id = name
    if model_id not in identity.models:
        raise forbidden(name)


class AdminGuard:
    """Checks the admin credential: only its SHA-256 is held, compared in constant time."""

    def __init__(self, admin_hash: str) -> None:
        self._hash = admin_hash

    def check(self, metadata: Iterable[Any] | None) -> None:
        token = credential(metadata)
        if not hmac.compare_digest(hash_secret(token), self._hash):
            raise unauthenticated("admin_required")
