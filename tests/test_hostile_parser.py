"""Nothing a client sends comes back, or reaches the log: parser errors answer a fixed message in
the JSON error shape; ambiguous credentials are refused; no version banner."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.auth.kit import auth_config
from tests.conftest import Gateway, GatewayFactory
from tests.fakes.raw_http import exchange, split

CHAT = b'{"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture
async def secured(gateway_factory: GatewayFactory, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Gateway, str]]:
    """A gateway with auth on, and a valid token for its mock models."""
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    gw = await gateway_factory(auth_config(tmp_path / "data"))
    assert gw.core.auth is not None and gw.core.auth.bootstrap.token_secret is not None
    yield gw, gw.core.auth.bootstrap.token_secret


def request(token: str, *, line: bytes = b"POST /v1/chat/completions HTTP/1.1",
            auth: bytes | None = None, extra: bytes = b"", body: bytes = CHAT,
            framing: bytes | None = None) -> bytes:
    auth = b"Authorization: Bearer " + token.encode() if auth is None else auth
    framing = f"Content-Length: {len(body)}\r\n".encode() if framing is None else framing
    return (line + b"\r\nHost: gw\r\nContent-Type: application/json\r\n" + auth + b"\r\n"
            + extra + framing + b"\r\n" + body)


def malformed(token: str) -> dict[str, bytes]:
    """Requests that the HTTP parser refuses, each carrying the valid token ``token``."""
    t = token.encode()
    bearer = b"Authorization: Bearer " + t
    gz = b"Content-Encoding: gzip\r\n"
    return {
        "ctl-0x01": request(token, auth=bearer + b"\x01"),
        "ctl-0x7f": request(token, auth=bearer + b"\x7f"),
        "ctl-nul": request(token, auth=bearer + b"\x00"),
        "bare-cr": request(token, auth=bearer + b"\rX"),
        "oversized": request(token, auth=bearer + b"a" * 9000),
        "no-colon": request(token, auth=b"Authorization Bearer " + t),
        "bad-name": request(token, auth=b"Auth" + t + b"\x01: x"),
        "bad-line": request(token, line=b"POST /v1/chat/completions?k=" + t + b"\x01 HTTP/1.1"),
        "long-line": request(token, line=b"POST /" + t + b"a" * 9000 + b" HTTP/1.1"),
        "bad-method": request(token, line=t + b"\x01 / HTTP/1.1"),
        "bad-version": request(token, line=b"POST / HTTP/" + t),
        "bad-length": request(token, framing=b"Content-Length: " + t + b"\r\n"),
        "two-lengths": request(token, framing=b"Content-Length: 3\r\nContent-Length: 4\r\n"),
        "bad-chunk": request(token, framing=b"Transfer-Encoding: chunked\r\n",
                             body=t + b"\r\n{}\r\n0\r\n\r\n"),
        "bad-te": request(token, framing=b"Transfer-Encoding: " + t + b"\r\n"),
        "not-gzip": request(token, extra=gz, body=t),
        "many-headers": request(token, extra=b"".join(b"X-%d: %s\r\n" % (i, t)
                                                      for i in range(200))),
    }


def assert_clean(answer: bytes, token: str, caplog: pytest.LogCaptureFixture) -> int:
    """No token in the answer or the log, no traceback; the answer is a JSON error."""
    assert token.encode() not in answer
    assert token not in caplog.text and "Traceback" not in caplog.text
    assert not any(r.exc_info for r in caplog.records if r.levelno < logging.ERROR)
    status, headers, body = split(answer)
    assert 400 <= status < 500, answer
    assert headers["content-type"].startswith("application/json")
    assert set(orjson.loads(body)["error"]) >= {"message", "type", "code"}
    assert "aiohttp" not in headers.get("server", "")
    return status


async def test_the_token_is_valid_when_well_formed(secured: tuple[Gateway, str]) -> None:
    gw, token = secured
    status, headers, body = split(await exchange(gw.edge.port, request(token).replace(
        b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1)))
    assert status == 200, body
    assert headers["server"] == "inference-gateway"


@pytest.mark.parametrize("form", list(malformed("x")))
async def test_a_malformed_request_never_echoes_its_token(
    secured: tuple[Gateway, str], form: str, caplog: pytest.LogCaptureFixture
) -> None:
    gw, token = secured
    caplog.set_level(logging.DEBUG)
    answer = await exchange(gw.edge.port, malformed(token)[form])
    assert_clean(answer, token, caplog)


@pytest.mark.parametrize("name", ["Authorization", "x-api-key"])
async def test_two_credential_headers_are_400(secured: tuple[Gateway, str], name: str) -> None:
    gw, token = secured
    value = f"Bearer {token}" if name == "Authorization" else token
    headers = [(name, value), (name, "Bearer igw_other")]
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}/v1/inference/chat", data=CHAT, headers=headers) as r:
        assert r.status == 400
        assert "more than one" in (await r.json())["error"]["message"]
        assert token not in await r.text()


async def test_no_version_banner_on_any_answer(secured: tuple[Gateway, str]) -> None:
    gw, _ = secured
    async with aiohttp.ClientSession() as s:
        for path in ("/health", "/v1/models", "/nowhere"):
            async with s.get(gw.http + path) as r:
                assert r.headers["Server"] == "inference-gateway"


async def test_repeated_client_errors_log_one_line(
        secured: tuple[Gateway, str], caplog: pytest.LogCaptureFixture) -> None:
    """The same client error, again and again, is one INFO line (no traceback) per interval."""
    gw, token = secured
    caplog.set_level(logging.INFO, logger="http_edge.server")
    for _ in range(20):
        answer = await exchange(gw.edge.port, malformed(token)["not-gzip"])
        assert answer.startswith(b"HTTP/1.1 400 ")
    lines = [r for r in caplog.records if "client error" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.INFO and lines[0].exc_info is None
    assert "Content-Encoding" in lines[0].getMessage()
    assert "Traceback" not in caplog.text and token not in caplog.text



def test_the_pure_python_parser_is_as_safe() -> None:
    """aiohttp parses with its C extension when it is built, else in Python; the two raise
    different errors with different texts. This module again, on the Python parser."""
    if os.environ.get("AIOHTTP_NO_EXTENSIONS"):
        pytest.skip("running on the Python parser already")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "not pure_python"],
        env={**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}, capture_output=True, timeout=300,
        check=False)
    assert done.returncode == 0, done.stdout.decode(errors="replace")[-3000:]
