"""The embedded SQLite token store: one file in the data dir, shared by every local process.

All reads and writes run on one worker thread, so the event loop never waits on the database.

Cross-process change signal: beside the database, ``gateway.sqlite3-rev`` holds 8 bytes that every
token change (create, revoke) overwrites with fresh random bytes after its commit and before the
call returns; every process maps the file into memory. ``generation()`` compares those bytes with
the ones it saw last: a memory read, no system call and no SQLite call on the hot path (``PRAGMA
data_version`` on a probe connection, the other option, measured 35-90 µs a request inside the
server). So a revocation made by any process is seen by the next request in every other one.
Usage and last-used writes do not touch the file, so they never empty caches. Should a process die
between its commit and the signal, the authenticator's cache bound (``auth.cache_seconds``) still
limits how long the change goes unseen.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import mmap
import os
import secrets
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

FILE_NAME = "gateway.sqlite3"
SIGNAL_SUFFIX = "-rev"

# Each migration is a list of statements, applied in one transaction; ``PRAGMA user_version``
# records how many have been applied. Append only: never edit a released migration.
MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "INSERT INTO meta (key, value) VALUES ('revision', '0')",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,
            models TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL,
            last_used_at REAL,
            revoked_at REAL
        )""",
        """CREATE TABLE usage (
            ts REAL NOT NULL,
            token_id TEXT NOT NULL,
            model TEXT NOT NULL,
            task TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            status TEXT NOT NULL,
            latency_ms REAL NOT NULL,
            end_user TEXT NOT NULL,
            request_id TEXT NOT NULL
        )""",
        "CREATE INDEX usage_ts ON usage (ts)",
        "CREATE INDEX usage_token_ts ON usage (token_id, ts)",
        "CREATE INDEX usage_model_ts ON usage (model, ts)",
    ],
    [
        "ALTER TABLE tokens ADD COLUMN limits TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE tokens ADD COLUMN priority TEXT NOT NULL DEFAULT 'standard'",
    ],
]

_TOKEN_COLUMNS = ("id, name, prefix, hash, models, created_at, expires_at, last_used_at, "
                  "revoked_at, limits, priority")
_BUMP = "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'"
_GROUPS = {
    "token": ("u.token_id", "''"),
    "model": ("''", "u.model"),
    "token_and_model": ("u.token_id", "u.model"),
}


def _token(row: Sequence[Any]) -> TokenRecord:
    return TokenRecord(
        id=row[0], name=row[1], prefix=row[2], hash=row[3], models=tuple(json.loads(row[4])),
        created_at=row[5], expires_at=row[6], last_used_at=row[7], revoked_at=row[8],
        limits=limits_from_json(json.loads(row[9] or "{}")), priority=row[10] or "standard",
    )


def _connect(path: Path, *, busy_ms: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; returns the schema version. Safe against concurrent starts."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the token store is at schema version {version}, newer than this gateway "
                f"knows ({len(MIGRATIONS)}): upgrade the gateway")
        for statements in MIGRATIONS[version:]:
            for sql in statements:
                conn.execute(sql)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


class SqliteStore(TokenStore):
    """Tokens and usage in ``<data_dir>/gateway.sqlite3`` (see module doc)."""

    kind = "sqlite"

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / FILE_NAME
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="igw-sqlite")
        self._db: sqlite3.Connection | None = None  # used on the worker thread only
        self._signal: mmap.mmap | None = None
        self._seen = b""
        self._generation = 0

    # -- plumbing ------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            log.error("token store error on %s: %s", self.path, exc)
            raise StoreUnavailable("the token store is unavailable") from exc

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("the token store is closed")
        return self._db

    def _write(self, fn: Callable[[sqlite3.Connection], T], signal: bool = False) -> T:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if signal and self._signal is not None:
            self._signal[0:8] = secrets.token_bytes(8)
        return result

    def _open_signal(self) -> None:
        fd = os.open(self.path.with_name(FILE_NAME + SIGNAL_SUFFIX), os.O_CREAT | os.O_RDWR,
                     0o600)
        try:
            if os.fstat(fd).st_size < 8:
                os.ftruncate(fd, 8)
            self._signal = mmap.mmap(fd, 8)
        finally:
            os.close(fd)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created private before SQLite opens it (the -wal and -shm files inherit the mode).
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = _connect(self.path, busy_ms=10_000)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        version = migrate(conn)
        self._open_signal()
        self._db = conn
        log.info("token store %s (schema version %d)", self.path, version)

    async def open(self) -> None:
        await self._run(self._open_sync)
        self.generation()

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._executor, db.close)
        if self._signal is not None:
            signal, self._signal = self._signal, None
            signal.close()
        self._executor.shutdown(wait=False)

    def generation(self) -> int | None:
        signal = self._signal
        if signal is None:
            return None
        seen = signal[0:8]
        if seen != self._seen:
            self._seen = seen
            self._generation += 1
        return self._generation

    # -- tokens --------------------------------------------------------------------------------

    async def bootstrap(self, admin_hash: str | None, initial: TokenRecord | None
                        ) -> BootstrapResult:
        def run(conn: sqlite3.Connection) -> BootstrapResult:
            stored = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('admin_hash', 'bootstrapped')"
            ).fetchall())
            admin_created = initial_created = False
            if "admin_hash" not in stored and admin_hash is not None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('admin_hash', ?)",
                             (admin_hash,))
                stored["admin_hash"] = admin_hash
                admin_created = True
            if "bootstrapped" not in stored:
                if initial is not None:
                    self._insert(conn, initial)
                    initial_created = True
                conn.execute("INSERT INTO meta (key, value) VALUES ('bootstrapped', '1')")
            return BootstrapResult(stored.get("admin_hash"), admin_created, initial_created)

        return await self._run(self._write, run, initial is not None)

    @staticmethod
    def _insert(conn: sqlite3.Connection, r: TokenRecord) -> None:
        conn.execute(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.name, r.prefix, r.hash, json.dumps(list(r.models)), r.created_at,
             r.expires_at, r.last_used_at, r.revoked_at, json.dumps(limits_to_json(r.limits)),
             r.priority),
        )
        conn.execute(_BUMP)

    async def create_token(self, record: TokenRecord) -> None:
        await self._run(self._write, lambda conn: self._insert(conn, record), True)

    def _select_one(self, where: str, arg: str) -> TokenRecord | None:
        row = self._conn().execute(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE {where} = ?", (arg,)).fetchone()
        return _token(row) if row is not None else None

    async def get_token(self, token_id: str) -> TokenRecord | None:
        return await self._run(self._select_one, "id", token_id)

    async def find_token(self, secret_hash: str) -> TokenRecord | None:
        return await self._run(self._select_one, "hash", secret_hash)

    async def list_tokens(self) -> list[TokenRecord]:
        def run() -> list[TokenRecord]:
            rows = self._conn().execute(
                f"SELECT {_TOKEN_COLUMNS} FROM tokens ORDER BY created_at DESC, id").fetchall()
            return [_token(r) for r in rows]

        return await self._run(run)

    async def revoke_token(self, token_id: str, at: float) -> TokenRecord | None:
        def run(conn: sqlite3.Connection) -> TokenRecord | None:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (at, token_id))
            if cur.rowcount == 0:
                return None
            conn.execute(_BUMP)
            return self._select_one("id", token_id)

        return await self._run(self._write, run, True)

    async def update_token(self, token_id: str, limits: RateLimits, priority: str
                           ) -> TokenRecord | None:
        def run(conn: sqlite3.Connection) -> TokenRecord | None:
            cur = conn.execute("UPDATE tokens SET limits = ?, priority = ? WHERE id = ?",
                               (json.dumps(limits_to_json(limits)), priority, token_id))
            if cur.rowcount == 0:
                return None
            conn.execute(_BUMP)
            return self._select_one("id", token_id)

        return await self._run(self._write, run, True)

    async def touch_tokens(self, last_used: Mapping[str, float]) -> None:
        rows = [(ts, token_id, ts) for token_id, ts in last_used.items()]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE tokens SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at < ?)", rows)

        await self._run(self._write, run)

    # -- usage ---------------------------------------------------------------------------------

    async def record_usage(self, batch: Sequence[UsageRecord]) -> None:
        rows = [(u.ts, u.token_id, u.model, u.task, u.prompt_tokens, u.completion_tokens,
                 u.status, u.latency_ms, u.end_user, u.request_id) for u in batch]

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

        await self._run(self._write, run)

    async def query_usage(self, *, token_id: str | None, model: str | None, start: float | None,
                          end: float | None, group_by: str) -> list[UsageRow]:
        token_col, model_col = _GROUPS[group_by]
        where: list[str] = ["1 = 1"]
        args: list[float | str] = []
        if start is not None:
            where.append("u.ts >= ?")
            args.append(start)
        if end is not None:
            where.append("u.ts < ?")
            args.append(end)
        if token_id is not None:
            where.append("u.token_id = ?")
            args.append(token_id)
        if model is not None:
            where.append("u.model = ?")
            args.append(model)
        sql = f"""
            SELECT {token_col} AS tid, COALESCE(MAX(t.name), '') , {model_col} AS mid,
                   COUNT(*), SUM(u.status != 'OK'), SUM(u.prompt_tokens),
                   SUM(u.completion_tokens), AVG(u.latency_ms),
                   COUNT(DISTINCT NULLIF(u.end_user, ''))
            FROM usage u LEFT JOIN tokens t ON t.id = u.token_id AND {token_col} != ''
            WHERE {' AND '.join(where)}
            GROUP BY tid, mid ORDER BY tid, mid"""

        def run() -> list[UsageRow]:
            return [UsageRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or 0.0, r[8])
                    for r in self._conn().execute(sql, args).fetchall()]

        return await self._run(run)
