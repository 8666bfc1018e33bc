"""The hostile-input suite: generated requests across every route and dialect (bodies, headers,
encodings, raw-socket framing) and slow senders, against a gateway with auth on.

For every case: no 5xx, no hang, the valid token it carries never in any answer, no secret and no
traceback in the log, and ``/health`` answering throughout. CI runs a fixed quick subset (every
raw-socket case, every route, and a sample); ``pytest -m hostile_full`` runs all of them (about
4,600).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway_common.config import parse_config
from gateway_common.defaults import default_config_data
from tests.conftest import Gateway, start_gateway
from tests.fakes.raw_http import first_answer
from tests.hostile_cases import Case, all_cases, quick_subset

QUICK = 1200
WITHIN = 20.0  # seconds a case may take on a loaded machine before it counts as a hang
CANARY = "igw-canary-3f9a1c"
HEADER_TIMEOUT = 1.0


@pytest.fixture
async def hostile_gw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                     ) -> AsyncIterator[tuple[Gateway, str]]:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    data = default_config_data()
    data.update({
        "auth": {"enabled": True, "admin_token_env": "IGW_TEST_ADMIN_UNSET"},
        "storage": {"data_dir": str(tmp_path / "data")},
        "limits": {"max_prompt_chars": 100_000, "max_body_bytes": 1 << 20,
                   "header_timeout_seconds": HEADER_TIMEOUT, "body_timeout_seconds": 1.0},
    })
    gw = await start_gateway(parse_config(data))
    assert gw.core.auth is not None and gw.core.auth.bootstrap.token_secret is not None
    yield gw, gw.core.auth.bootstrap.token_secret
    await gw.stop()


class Health:
    """Polls /health on fresh connections while the cases run; counts what was not a 200."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.checks = 0
        self.failures: list[str] = []

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=WITHIN)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            while True:
                try:
                    async with s.get(self.base + "/health",
                                     headers={"Connection": "close"}) as r:
                        if r.status != 200:
                            self.failures.append(f"status {r.status}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.failures.append(repr(exc))
                self.checks += 1
                await asyncio.sleep(0.05)  # a polling interval


async def send(session: aiohttp.ClientSession, port: int, case: Case, token: str
               ) -> tuple[int, bytes]:
    """(status, everything the server answered); status 0 when it closed without an answer."""
    if case.raw is not None:
        answer = await first_answer(port, case.raw.replace(b"{token}", token.encode()), WITHIN)
        head = answer.split(b"\r\n", 1)[0].split(b" ")
        return (int(head[1]) if len(head) > 1 and head[1].isdigit() else 0), answer
    headers = {"Authorization": f"Bearer {token}", "X-Canary": CANARY, **case.headers}
    async with session.request(case.method, f"http://127.0.0.1:{port}{case.path}",
                               data=case.body, headers=headers) as r:
        body = await r.read()
        seen = "".join(f"{k}: {v}\n" for k, v in r.headers.items()).encode() + body
        return r.status, seen


async def slow_sender(port: int) -> float:
    """A slowloris: half a request head, then a byte now and then; returns when it was cut."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
    with contextlib.suppress(ConnectionError):
        while not reader.at_eof():
            writer.write(b"X")
            await asyncio.sleep(0.1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1024), 0.01)
    writer.close()
    return time.monotonic() - started


async def run_cases(gw: Gateway, token: str, cases: list[Case],
                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    health = Health(gw.http)
    poller = asyncio.create_task(health.run())
    slow = [asyncio.create_task(slow_sender(gw.edge.port)) for _ in range(3)]
    limit = asyncio.Semaphore(8)
    problems: list[str] = []

    async def one(session: aiohttp.ClientSession, case: Case) -> None:
        async with limit:
            try:
                async with asyncio.timeout(WITHIN):
                    status, seen = await send(session, gw.edge.port, case, token)
            except TimeoutError:
                problems.append(f"{case.name}: no answer within {WITHIN} s")
                return
            except aiohttp.ClientError as exc:  # e.g. a kept-alive connection closed under it
                problems.append(f"{case.name}: {exc!r}")
                return
        if status >= 500 and status not in case.allowed:
            problems.append(f"{case.name}: {status} {seen[-300:]!r}")
        if token.encode() in seen or CANARY.encode() in seen:
            problems.append(f"{case.name}: a request secret came back")

    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(one(session, case) for case in cases))
        cut = await asyncio.wait_for(asyncio.gather(*slow), HEADER_TIMEOUT + WITHIN)
    finally:
        poller.cancel()
    assert not problems, problems[:20]
    assert all(seconds < HEADER_TIMEOUT + 10 for seconds in cut), cut
    assert health.checks > 0 and not health.failures, health.failures[:5]
    assert token not in caplog.text and CANARY not in caplog.text
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def test_hostile_inputs_quick(hostile_gw: tuple[Gateway, str],
                                    caplog: pytest.LogCaptureFixture) -> None:
    gw, token = hostile_gw
    await run_cases(gw, token, quick_subset(all_cases(), QUICK), caplog)


@pytest.mark.hostile_full
async def test_hostile_inputs_full(hostile_gw: tuple[Gateway, str],
                                   caplog: pytest.LogCaptureFixture) -> None:
    gw, token = hostile_gw
    cases = all_cases()
    assert len(cases) >= 1000
    await run_cases(gw, token, cases, caplog)
