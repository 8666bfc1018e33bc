"""The PostgreSQL token store: tokens and usage shared by every replica.

Tables are prefixed ``igw_`` and live in the connection's schema (set ``search_path`` in the DSN's
query string to use another one). Every token change sends ``NOTIFY igw_tokens`` in its
transaction; each replica listens on a dedicated connection and bumps its ``generation()`` when a
notification arrives, which empties its token cache (typically within milliseconds of the
commit). While that connection is down, ``generation()`` is None, so no cached token is trusted
until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from gateway_common.config import RateLimits
from gateway_core.auth.records import (
    TokenRecord,
    UsageRecord,
    UsageRow,
    limits_from_json,
    limits_to_json,
)
from gateway_core.auth.store import BootstrapResult, StoreUnavailable, TokenStore

log = logging.getLogger(__name__)

CHANNEL = "igw_tokens"
# Serialises migrations and bootstrap between replicas starting at once.
_LOCK_KEY = 0x6967775F746F6B  # "igw_tok"

MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE igw_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE igw_tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            models TEXT[] NOT NULL,
            created_at DOUBLE PRECISION NOT NULL,
            expires_at DOUBLE PRECISION,
            last_used_at DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION
        )""",
        """CREATE TABLE igw_usage (
            ts DOUBLE PRECISION NOT NULL,
            token_id TEXT NOT NULL,
            model TEXT NOT NULL,
            task TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            status TEXT NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            end_user TEXT NOT NULL,
            request_id TEXT NOT NULL
        )""",
        "CREATE INDEX igw_usage_ts ON igw_usage (ts)",
        "CREATE INDEX igw_usage_token_ts ON igw_usage (token_id, ts)",
        "CREATE INDEX igw_usage_model_ts ON igw_usage (model, ts)",
    ],
    [
        "ALTER TABLE igw_tokens ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE igw_tokens ADD COLUMN priority TEXT NOT NULL DEFAULT 'standard'",
    ],
]

_COLUMNS = ("id, name, prefix, hash, models, created_at, expires_at, last_used_at, revoked_at, "
            "limits, priority")
_GROUPS = {
    "token": ("token_id", "''"),
    "model": ("''", "model"),
    "token_and_model": ("token_id", "model"),
}


def _token(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        id=row["id"], name=row["name"], prefix=row["prefix"], hash=row["hash"],
        models=tuple(row["models"]), created_at=row["created_at"], expires_at=row["expires_at"],
        last_used_at=row["last_used_at"], revoked_at=row["revoked_at"],
        limits=limits_from_json(json.loads(row["limits"] or "{}")),
        priority=row["priority"] or "standard",
    )


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply pending migrations under an advisory lock; returns the schema version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute("CREATE TABLE IF NOT EXISTS igw_schema_version (version INTEGER)")
        version = await conn.fetchval("SELECT max(version) FROM igw_schema_version") or 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the token store is at schema version {version}, newer than this gateway "
                f"knows ({len(MIGRATIONS)}): upgrade the gateway")
        for i, statements in enumerate(MIGRATIONS[version:], start=version + 1):
            for sql in statements:
                await conn.execute(sql)
            await conn.execute("INSERT INTO igw_schema_version (version) VALUES ($1)", i)
    return len(MIGRATIONS)


class PostgresStore(TokenStore):
    """Tokens and usage in PostgreSQL (see module doc)."""

    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._listening = False
        self._generation = 0
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False

    # -- plumbing ------------------------------------------------------------------------------

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the token store is closed")
        return self._pool

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        async with self._pool.acquire() as conn:
            version = await migrate(conn)
        await self._listen()
        log.info("token store on PostgreSQL (schema version %d)", version)

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        await conn.add_listener(CHANNEL, self._notified)
        conn.add_termination_listener(self._lost)
        self._listener = conn
        self._generation += 1  # whatever changed while not listening
        self._listening = True

    def _notified(self, *args: Any) -> None:
        self._generation += 1

    def _lost(self, *args: Any) -> None:
        self._listening = False
        if not self._closing and (self._reconnect is None or self._reconnect.done()):
            log.warning("lost the token store's notification connection; reconnecting")
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.2
        while not self._closing and not self._listening:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("token store notifications: %s (retry in %.1fs)", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        self._closing = True
        self._listening = False
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def generation(self) -> int | None:
        return self._generation if self._listening else None

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        try:
            return list(await self._p().fetch(sql, *args))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.error("token store error: %s", exc)
            raise StoreUnavailable("the token store is unavailable") from exc

    # -- tokens --------------------------------------------------------------------------------

    @staticmethod
    async def _insert(conn: asyncpg.Connection, r: TokenRecord) -> None:
        await conn.execute(
            f"INSERT INTO igw_tokens ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10, $11)",
            r.id, r.name, r.prefix, r.hash, list(r.models), r.created_at, r.expires_at,
            r.last_used_at, r.revoked_at, json.dumps(limits_to_json(r.limits)), r.priority)
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, r.id)

    async def bootstrap(self, admin_hash: str | None, initial: TokenRecord | None
                        ) -> BootstrapResult:
        async with self._p().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            stored = dict(await conn.fetch(
                "SELECT key, value FROM igw_meta WHERE key IN ('admin_hash', 'bootstrapped')"))
            admin_created = initial_created = False
            if "admin_hash" not in stored and admin_hash is not None:
                await conn.execute(
                    "INSERT INTO igw_meta (key, value) VALUES ('admin_hash', $1)", admin_hash)
                stored["admin_hash"] = admin_hash
                admin_created = True
            if "bootstrapped" not in stored:
                if initial is not None:
                    await self._insert(conn, initial)
                    initial_created = True
                await conn.execute("INSERT INTO igw_meta (key, value) VALUES ('bootstrapped', '1')")
        return BootstrapResult(stored.get("admin_hash"), admin_created, initial_created)

    async def create_token(self, record: TokenRecord) -> None:
        try:
            async with self._p().acquire() as conn, conn.transaction():
                await self._insert(conn, record)
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("the token store is unavailable") from exc

    async def get_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM igw_tokens WHERE id = $1", token_id)
        return _token(rows[0]) if rows else None

    async def find_token(self, secret_hash: str) -> TokenRecord | None:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM igw_tokens WHERE hash = $1",
                                 secret_hash)
        return _token(rows[0]) if rows else None

    async def list_tokens(self) -> list[TokenRecord]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM igw_tokens ORDER BY created_at DESC, id")
        return [_token(r) for r in rows]

    async def revoke_token(self, token_id: str, at: float) -> TokenRecord | None:
        try:
            async with self._p().acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"UPDATE igw_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 "
                    f"RETURNING {_COLUMNS}", at, token_id)
                if row is None:
                    return None
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, token_id)
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("the token store is unavailable") from exc
        return _token(row)

    async def update_token(self, token_id: str, limits: RateLimits, priority: str
                           ) -> TokenRecord | None:
        try:
            async with self._p().acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"UPDATE igw_tokens SET limits = $1, priority = $2 WHERE id = $3 "
                    f"RETURNING {_COLUMNS}", json.dumps(limits_to_json(limits)), priority,
                    token_id)
                if row is None:
                    return None
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, token_id)
        except (OSError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("the token store is unavailable") from exc
        return _token(row)

    async def touch_tokens(self, last_used: Mapping[str, float]) -> None:
        await self._p().executemany(
            "UPDATE igw_tokens SET last_used_at = $1 WHERE id = $2 "
            "AND (last_used_at IS NULL OR last_used_at < $1)",
            [(ts, token_id) for token_id, ts in last_used.items()])

    # -- usage ---------------------------------------------------------------------------------

    async def record_usage(self, batch: Sequence[UsageRecord]) -> None:
        await self._p().executemany(
            "INSERT INTO igw_usage VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            [(u.ts, u.token_id, u.model, u.task, u.prompt_tokens, u.completion_tokens, u.status,
              u.latency_ms, u.end_user, u.request_id) for u in batch])

    async def query_usage(self, *, token_id: str | None, model: str | None, start: float | None,
                          end: float | None, group_by: str) -> list[UsageRow]:
        token_col, model_col = _GROUPS[group_by]
        where: list[str] = ["TRUE"]
        args: list[float | str] = []
        for cond, value in (("ts >= ${}", start), ("ts < ${}", end),
                            ("token_id = ${}", token_id), ("model = ${}", model)):
            if value is not None:
                args.append(value)
                where.append(cond.format(len(args)))
        sql = f"""
            SELECT g.tid, COALESCE(t.name, '') AS name, g.mid, g.requests, g.errors, g.prompt,
                   g.completion, g.latency, g.end_users
            FROM (
                SELECT {token_col} AS tid, {model_col} AS mid, count(*) AS requests,
                       count(*) FILTER (WHERE status <> 'OK') AS errors,
                       coalesce(sum(prompt_tokens), 0) AS prompt,
                       coalesce(sum(completion_tokens), 0) AS completion,
                       avg(latency_ms) AS latency,
                       count(DISTINCT nullif(end_user, '')) AS end_users
                FROM igw_usage WHERE {' AND '.join(where)}
                GROUP BY 1, 2
            ) g LEFT JOIN igw_tokens t ON t.id = g.tid
            ORDER BY g.tid, g.mid"""
        rows = await self._fetch(sql, *args)
        return [UsageRow(r[0], r[1], r[2], r[3], r[4], int(r[5]), int(r[6]), float(r[7] or 0.0),
                         r[8]) for r in rows]
