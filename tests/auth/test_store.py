"""The token store contract on both backends (SQLite, and PostgreSQL when one is reachable), the
cross-process change signal, migrations, and replicas sharing PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest

from gateway_core.auth import postgres_store, sqlite_store
from gateway_core.auth.postgres_store import PostgresStore
from gateway_core.auth.records import TokenRecord, UsageRecord
from gateway_core.auth.service import make_token
from gateway_core.auth.sqlite_store import FILE_NAME, SqliteStore
from gateway_core.auth.store import TokenStore
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import auth_config, bearer, chat, reason_of
from tests.conftest import GatewayFactory

PG_DSN = os.environ.get("IGW_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")

StoreMaker = Callable[[], Awaitable[TokenStore]]


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A DSN whose search_path is a fresh schema, dropped afterwards."""
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG_DSN} ({exc}); set "
                    "IGW_TEST_POSTGRES_DSN to run the PostgreSQL backend tests")
    schema = f"igw_test_{secrets.token_hex(6)}"
    await conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where the stores of one test live: a data dir, or a PostgreSQL DSN (skipped when none)."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("pg_dsn")
        return dsn
    return tmp_path / "data"


@pytest.fixture
async def make_store(backing: str | Path) -> AsyncIterator[StoreMaker]:
    """Opens stores on one shared backing, as separate processes or replicas would."""
    opened: list[TokenStore] = []

    async def make() -> TokenStore:
        store: TokenStore = PostgresStore(backing) if isinstance(backing, str) \
            else SqliteStore(backing)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def _record(name: str = "t", models: tuple[str, ...] = ("m1",), expires_at: float | None = None
            ) -> tuple[TokenRecord, str]:
    return make_token(name, models, expires_at)


async def _changes(store: TokenStore, before: int | None, limit: float = 2.0) -> float:
    """Seconds until ``store.generation()`` differs from ``before`` (fails after ``limit``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if store.generation() != before:
            return time.perf_counter() - started
        await asyncio.sleep(0.001)  # PostgreSQL notifications arrive asynchronously
    raise AssertionError("the store's generation did not change")


async def test_store_contract(make_store: StoreMaker) -> None:
    store = await make_store()
    a, _ = _record("alpha", ("m1", "m2"), expires_at=time.time() + 60)
    b, _ = _record("beta", ("*",))
    await store.create_token(a)
    await store.create_token(b)
    assert await store.find_token(a.hash) == a
    assert await store.get_token(b.id) == b
    assert await store.find_token("0" * 64) is None and await store.get_token("tok_x") is None
    assert [t.id for t in await store.list_tokens()] in ([b.id, a.id], [a.id, b.id])
    revoked = await store.revoke_token(a.id, 1000.0)
    assert revoked is not None and revoked.revoked_at == 1000.0
    again = await store.revoke_token(a.id, 2000.0)
    assert again is not None and again.revoked_at == 1000.0  # the first revocation stands
    assert await store.revoke_token("tok_nope", 1.0) is None
    await store.touch_tokens({b.id: 50.0})
    await store.touch_tokens({b.id: 40.0})  # an older time never goes back
    touched = await store.get_token(b.id)
    assert touched is not None and touched.last_used_at == 50.0

    now = time.time()
    await store.record_usage([
        UsageRecord(now, a.id, "m1", "chat", 10, 5, "OK", 2.0, "alice"),
        UsageRecord(now, a.id, "m1", "chat", 1, 1, "UNAVAILABLE", 4.0, "bob"),
        UsageRecord(now, b.id, "m2", "embedding", 7, 0, "OK", 1.0),
        UsageRecord(now - 3600, b.id, "m2", "embedding", 100, 0, "OK", 1.0),
    ])
    rows = await store.query_usage(token_id=None, model=None, start=now - 60, end=None,
                                   group_by="token_and_model")
    got = {(r.token_id, r.model): r for r in rows}
    assert set(got) == {(a.id, "m1"), (b.id, "m2")}
    r = got[(a.id, "m1")]
    assert (r.token_name, r.requests, r.errors, r.prompt_tokens, r.completion_tokens,
            r.end_users) == ("alpha", 2, 1, 11, 6, 2)
    assert r.mean_latency_ms == pytest.approx(3.0)
    by_model = await store.query_usage(token_id=None, model="m2", start=None, end=None,
                                       group_by="model")
    assert [(x.token_id, x.model, x.requests, x.prompt_tokens) for x in by_model] == \
        [("", "m2", 2, 107)]
    by_token = await store.query_usage(token_id=b.id, model=None, start=None, end=now - 60,
                                       group_by="token")
    assert [(x.token_id, x.token_name, x.requests) for x in by_token] == [(b.id, "beta", 1)]


async def test_generation_changes_with_tokens_not_with_usage(make_store: StoreMaker) -> None:
    writer, reader = await make_store(), await make_store()  # two processes sharing a store
    record, _ = _record()
    before = reader.generation()
    assert before is not None
    await writer.create_token(record)
    await _changes(reader, before)
    before = reader.generation()
    await writer.record_usage([UsageRecord(time.time(), record.id, "m1", "chat", 1, 1, "OK", 1)])
    await writer.touch_tokens({record.id: time.time()})
    await reader.list_tokens()  # a round trip after the writes
    assert reader.generation() == before
    await writer.revoke_token(record.id, time.time())
    seconds = await _changes(reader, before)
    assert seconds < 1.0


async def test_bootstrap_happens_once(make_store: StoreMaker) -> None:
    first, second = await make_store(), await make_store()
    initial, _ = _record("default", ("*",))
    result = await first.bootstrap("a" * 64, initial)
    assert (result.admin_hash, result.admin_created, result.initial_created) == \
        ("a" * 64, True, True)
    other, _ = _record("default", ("*",))
    again = await second.bootstrap("b" * 64, other)
    assert (again.admin_hash, again.admin_created, again.initial_created) == \
        ("a" * 64, False, False)
    assert [t.id for t in await second.list_tokens()] == [initial.id]


async def test_sqlite_file_is_private_and_versioned(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "data")
    await store.open()
    await store.close()
    path = tmp_path / "data" / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    signal = path.with_name(FILE_NAME + "-rev")  # the cross-process change signal
    assert stat.S_IMODE(signal.stat().st_mode) == 0o600 and signal.stat().st_size == 8
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sqlite_store.MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened = SqliteStore(tmp_path / "data")  # migrations are idempotent
    await reopened.open()
    await reopened.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    newer = SqliteStore(tmp_path / "data")
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        await newer.open()
    await newer.close()


async def test_postgres_refuses_a_newer_schema(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    assert await conn.fetchval("SELECT max(version) FROM igw_schema_version") == \
        len(postgres_store.MIGRATIONS)
    await conn.execute("INSERT INTO igw_schema_version VALUES (99)")
    await conn.close()
    newer = PostgresStore(pg_dsn)
    with pytest.raises(RuntimeError, match="newer than this gateway"):
        await newer.open()
    await newer.close()


async def test_postgres_listener_loss_empties_caches_and_reconnects(pg_dsn: str) -> None:
    store, writer = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await store.open()
    await writer.open()
    try:
        old, before = store._listener, store.generation()
        assert old is not None and before is not None
        conn = await asyncpg.connect(pg_dsn)
        await conn.execute("SELECT pg_terminate_backend($1)", old.get_server_pid())
        await conn.close()
        started = time.perf_counter()
        # Noticed, and back: a new listener, and a generation that moved (caches emptied).
        while store._listener is old or store.generation() is None:
            assert time.perf_counter() - started < 5, "the listener did not come back"
            await asyncio.sleep(0.005)
        after = store.generation()
        assert after is not None and after != before
        # Notifications flow again on the new connection.
        await writer.create_token(_record()[0])
        await _changes(store, after)
    finally:
        await writer.close()
        await store.close()


async def test_postgres_replicas_share_tokens_and_revocation(
    gateway_factory: GatewayFactory, tmp_path: Path, pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IGW_TEST_DSN", pg_dsn)
    data = auth_config(tmp_path / "unused")
    data["storage"] = {"backend": "postgres", "dsn_env": "IGW_TEST_DSN"}
    first = await open_auth_gateway(gateway_factory, data)
    second = await gateway_factory(data)
    assert second.core.auth is not None and second.core.auth.bootstrap.token_secret is None
    assert not (tmp_path / "unused").exists()
    token_id, secret = await first.create("mock-chat")
    try:
        async with grpc.aio.insecure_channel(second.grpc_target) as ch:
            other = pb_grpc.InferenceStub(ch)
            assert (await other.Chat(chat(), metadata=bearer(first.token), timeout=5)).choices
            assert (await other.Chat(chat(), metadata=bearer(secret), timeout=5)).choices
            await first.revoke(token_id)
            revoked_at = time.perf_counter()
            while True:  # each attempt is a real request to the other replica
                try:
                    await other.Chat(chat(), metadata=bearer(secret), timeout=5)
                except grpc.aio.AioRpcError as exc:
                    assert reason_of(exc) == "auth_revoked"
                    break
                assert time.perf_counter() - revoked_at < 1.0, "revocation took over 1 s"
                await asyncio.sleep(0.005)
    finally:
        await first.channel.close()


async def test_a_store_of_the_first_schema_is_upgraded_keeping_its_tokens(
        tmp_path: Path) -> None:
    """A data dir made before tokens had limits opens with them unlimited and standard."""
    path = tmp_path / "data"
    path.mkdir()
    conn = sqlite3.connect(path / FILE_NAME)
    for statement in sqlite_store.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO tokens (id, name, prefix, hash, models, created_at) VALUES "
                 "('tok_old', 'old', 'igw_abcd', 'h', '[\"*\"]', 1.0)")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        record = await store.get_token("tok_old")
        assert record is not None and record.name == "old"
        assert not record.limits.any() and record.priority == "standard"
    finally:
        await store.close()
