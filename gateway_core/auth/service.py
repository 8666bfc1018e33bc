"""Token administration rules, shared by the Admin servicer and the CLI's local mode.

Creating a token makes its secret here and hands it back once; only its hash reaches the store.
Model names are checked and stored as model ids (an alias is resolved), or "*" for every model.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway_common.config import PRIORITIES, RateLimits
from gateway_core.auth.records import (
    ALL_MODELS,
    LIMIT_FIELDS,
    SHOWN_CHARS,
    TokenRecord,
    hash_secret,
    new_secret,
    new_token_id,
)
from gateway_core.auth.store import TokenStore
from gateway_core.errors import InvalidRequest, NotFound

MAX_NAME = 200
MAX_MODELS = 1000
MAX_LIMIT = 10**15

# Model name or alias → its id, or None when no such model is configured.
Resolver = Callable[[str], str | None]


def make_token(name: str, models: tuple[str, ...], expires_at: float | None,
               now: float | None = None, limits: RateLimits | None = None,
               priority: str = "standard") -> tuple[TokenRecord, str]:
    """A new token record and its secret (the only time the secret exists)."""
    secret = new_secret()
    record = TokenRecord(
        id=new_token_id(), name=name, prefix=secret[:SHOWN_CHARS], hash=hash_secret(secret),
        models=models, created_at=time.time() if now is None else now, expires_at=expires_at,
        limits=limits or RateLimits(), priority=priority,
    )
    return record, secret


def check_limits(limits: RateLimits, priority: str) -> None:
    for name in LIMIT_FIELDS:
        value = getattr(limits, name)
        if value is not None and not 1 <= value <= MAX_LIMIT:
            raise InvalidRequest(f"the limit '{name}' must be between 1 and {MAX_LIMIT} (unset: "
                                 "no limit)")
    if priority not in PRIORITIES:
        raise InvalidRequest(f"the priority must be one of {', '.join(PRIORITIES)}")


class TokenService:
    """Create, list, get and revoke tokens with the checks the API promises."""

    def __init__(self, store: TokenStore, resolve: Resolver,
                 on_revoke: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.resolve = resolve
        self.on_revoke = on_revoke

    def model_ids(self, models: list[str]) -> tuple[str, ...]:
        if not models:
            raise InvalidRequest("give at least one model (or '*' for every model)")
        if len(models) > MAX_MODELS:
            raise InvalidRequest(f"a token may name at most {MAX_MODELS} models")
        ids: list[str] = []
        for name in models:
            model_id = ALL_MODELS if name == ALL_MODELS else self.resolve(name)
            if model_id is None:
                shown = name if len(name) <= 200 else name[:200] + "..."
                raise InvalidRequest(f"the model '{shown}' does not exist")
            if model_id not in ids:
                ids.append(model_id)
        return (ALL_MODELS,) if ALL_MODELS in ids else tuple(ids)

    async def create(self, name: str, models: list[str], expires_at: float | None,
                     limits: RateLimits | None = None, priority: str = "standard"
                     ) -> tuple[TokenRecord, str]:
        name = name.strip()
        if not name:
            raise InvalidRequest("the token needs a name")
        if len(name) > MAX_NAME or not name.isprintable():
            raise InvalidRequest(f"the name must be printable text of at most {MAX_NAME} "
                                 "characters")
        ids = self.model_ids(models)
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest("the expiry is in the past")
        check_limits(limits or RateLimits(), priority)
        record, secret = make_token(name, ids, expires_at, now, limits, priority)
        await self.store.create_token(record)
        return record, secret

    async def update(self, token_id: str, limits: RateLimits, priority: str | None
                     ) -> TokenRecord:
        current = await self.get(token_id)
        priority = priority or current.priority
        check_limits(limits, priority)
        record = await self.store.update_token(token_id, limits, priority)
        if record is None:
            raise NotFound(f"no token with id '{token_id[:100]}'")
        if self.on_revoke is not None:
            self.on_revoke(record.id)  # (drops what this replica cached of the token)
        return record

    async def list(self, model: str | None = None, include_revoked: bool = False
                   ) -> list[TokenRecord]:
        tokens = await self.store.list_tokens()
        if not include_revoked:
            tokens = [t for t in tokens if t.revoked_at is None]
        if model:
            model_id = self.resolve(model)
            if model_id is None:
                raise InvalidRequest(f"the model '{model[:200]}' does not exist")
            tokens = [t for t in tokens if t.allows(model_id)]
        return tokens

    async def get(self, token_id: str) -> TokenRecord:
        record = await self.store.get_token(token_id) if token_id else None
        if record is None:
            raise NotFound(f"no token with id '{token_id[:100]}'")
        return record

    async def revoke(self, token_id: str) -> TokenRecord:
        record = await self.store.revoke_token(token_id, time.time()) if token_id else None
        if record is None:
            raise NotFound(f"no token with id '{token_id[:100]}'")
        if self.on_revoke is not None:
            self.on_revoke(record.id)
        return record
