"""The token store interface: one contract, an embedded SQLite file or a shared PostgreSQL.

The store keeps tokens (by the hash of their secret), the admin credential's hash, and usage
records. It is never asked on the hot path except through ``generation()``, a cheap synchronous
check that changes whenever tokens may have changed anywhere (another process on the same SQLite
file, another replica on the same PostgreSQL); the authenticator drops its cache when it does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway_common.config import GatewayConfig, RateLimits
from gateway_core.auth.records import TokenRecord, UsageRecord, UsageRow
from gateway_core.errors import GatewayError


class StoreUnavailable(GatewayError):
    """The token store cannot be reached: the request cannot be authenticated now."""

    code = "UNAVAILABLE"
    reason = "auth_store_unavailable"


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    """What ``bootstrap`` did: which of the offered credentials it stored."""

    # The stored admin credential's hash, if one is stored.
    admin_hash: str | None
    admin_created: bool
    initial_created: bool


class TokenStore(ABC):
    """Tokens, the admin credential and usage, behind one interface (see module doc)."""

    #: "sqlite" or "postgres", for logs.
    kind: str = ""

    @abstractmethod
    async def open(self) -> None:
        """Connect, creating the database on first start and applying pending migrations."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def generation(self) -> int | None:
        """A number that changes whenever any token may have changed, in any process. Cheap and
        synchronous (called on every request). None: the store cannot tell right now, so cached
        tokens must not be trusted."""

    @abstractmethod
    async def bootstrap(self, admin_hash: str | None, initial: TokenRecord | None
                        ) -> BootstrapResult:
        """In one transaction: store ``admin_hash`` if no admin credential is stored yet, and
        ``initial`` if the store has never been bootstrapped (a fresh data dir)."""

    @abstractmethod
    async def create_token(self, record: TokenRecord) -> None: ...

    @abstractmethod
    async def get_token(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    async def find_token(self, secret_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to ``secret_hash`` (revoked and expired ones too)."""

    @abstractmethod
    async def list_tokens(self) -> list[TokenRecord]:
        """Every token, newest first."""

    @abstractmethod
    async def revoke_token(self, token_id: str, at: float) -> TokenRecord | None:
        """Mark revoked (keeping an earlier revocation time); None when unknown."""

    @abstractmethod
    async def update_token(self, token_id: str, limits: RateLimits, priority: str
                           ) -> TokenRecord | None:
        """Set a token's limits and priority class; None when unknown."""

    @abstractmethod
    async def touch_tokens(self, last_used: Mapping[str, float]) -> None:
        """Record last-used times (token id → Unix seconds), batched by the caller."""

    @abstractmethod
    async def record_usage(self, batch: Sequence[UsageRecord]) -> None: ...

    @abstractmethod
    async def query_usage(self, *, token_id: str | None, model: str | None, start: float | None,
                          end: float | None, group_by: str) -> list[UsageRow]:
        """Totals per group (``token``, ``model`` or ``token_and_model``) over [start, end)."""


def open_store(config: GatewayConfig) -> TokenStore:
    """The configured backend (not yet opened)."""
    storage = config.storage
    if storage.backend == "postgres":
        import os

        from gateway_common.config import ConfigError
        from gateway_core.auth.postgres_store import PostgresStore

        dsn = os.environ.get(storage.dsn_env)
        if not dsn:
            raise ConfigError("storage.dsn_env",
                              f"the environment variable {storage.dsn_env} (the PostgreSQL DSN) "
                              "is not set")
        return PostgresStore(dsn)
    from gateway_core.auth.sqlite_store import SqliteStore

    return SqliteStore(storage.data_dir)
