"""The console (SPEC §12) through its HTTP pages, as a browser without JavaScript uses them:
sign-in and sessions, the models and model pages, creating a token (its secret shown once) and
revoking it, CSRF, escaping and the security headers."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import AuthGateway, auth_config
from tests.conftest import GatewayFactory

CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)


@pytest.fixture
async def gw(gateway_factory: GatewayFactory, tmp_path: Path) -> AsyncIterator[AuthGateway]:
    gateway = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    yield gateway
    await gateway.channel.close()


def browser() -> aiohttp.ClientSession:
    # A cookie jar that keeps cookies of 127.0.0.1 (unsafe=True: an IP address).
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(s: aiohttp.ClientSession, gw: AuthGateway) -> str:
    async with s.post(gw.gw.http + "/console/login", data={"credential": gw.admin}) as r:
        assert r.status == 200 and r.url.path == "/console/", r.url
        return await r.text()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "no CSRF token in the page"
    return match.group(1)


async def test_pages_need_a_session_and_sign_in_takes_the_admin_credential(
        gw: AuthGateway) -> None:
    base = gw.gw.http
    async with browser() as s:
        async with s.get(base + "/console/", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/console/login"
        async with s.get(base + "/console/models/mock-chat", allow_redirects=False) as r:
            assert r.status == 303
        # A model token is not the admin credential.
        async with s.post(base + "/console/login", data={"credential": gw.token}) as r:
            assert r.status == 401
            assert "not the admin credential" in await r.text()
        async with s.post(base + "/console/login", data={"credential": gw.admin},
                          allow_redirects=False) as r:
            assert r.status == 303
            cookie = r.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert "Max-Age=" in cookie
        assert gw.admin not in cookie
        async with s.get(base + "/console/") as r:
            page = await r.text()
        assert r.status == 200
        assert "mock-chat" in page and "mock-embedding" in page and "chat" in page
        # Sign out: the session is gone.
        async with s.post(base + "/console/logout", data={"csrf": csrf_of(page)},
                          allow_redirects=False) as r:
            assert r.status == 303
        async with s.get(base + "/console/", allow_redirects=False) as r:
            assert r.status == 303


async def test_headers_forbid_framing_and_inline_script(gw: AuthGateway) -> None:
    async with browser() as s:
        await sign_in(s, gw)
        for path in ("/console/login", "/console/", "/console/models/mock-chat"):
            async with s.get(gw.gw.http + path) as r:
                page = await r.text()
                csp = r.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
                assert "unsafe-inline" not in csp
                assert r.headers["X-Frame-Options"] == "DENY"
                assert r.headers["Cache-Control"] == "no-store"
            assert "<script>" not in page and " style=" not in page and "onclick" not in page


async def test_a_token_made_in_the_console_works_once_shown_and_revoked_there(
        gw: AuthGateway) -> None:
    base = gw.gw.http
    async with browser() as s:
        await sign_in(s, gw)
        async with s.get(base + "/console/models/mock-chat") as r:
            page = await r.text()
        # Without the CSRF token a form is refused.
        async with s.post(base + "/console/models/mock-chat/tokens",
                          data={"name": "x", "expiry": "never"}) as r:
            assert r.status == 403
        async with s.post(base + "/console/models/mock-chat/tokens", data={
                "csrf": csrf_of(page), "name": "<script>alert(1)</script>",
                "expiry": "30"}) as r:
            assert r.status == 200
            assert "?" not in str(r.url) and r.url.path == "/console/models/mock-chat/tokens"
            created = await r.text()
        secret = re.search(r'id="new-secret">(igw_[A-Za-z0-9_-]{43})<', created)
        assert secret, "the new secret is not on the page"
        assert "will not be shown again" in created
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in created
        assert "<script>alert(1)" not in created
        assert created.count(secret.group(1)) >= 2  # shown, and filled in the code
        # The token works, and no later page shows its secret.
        async with s.post(base + "/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {secret.group(1)}"}) as r:
            assert r.status == 200
        async with s.get(base + "/console/models/mock-chat") as r:
            later = await r.text()
        assert secret.group(1) not in later
        assert "&lt;script&gt;" in later
        token_id = re.search(r'/tokens/(tok_[0-9a-f]+)/revoke', later)
        assert token_id
        async with s.post(f"{base}/console/models/mock-chat/tokens/{token_id.group(1)}/revoke",
                          data={"csrf": csrf_of(later)}) as r:
            assert r.status == 200
        async with s.post(base + "/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {secret.group(1)}"}) as r:
            assert r.status == 401
        async with s.get(base + "/console/models/mock-chat?revoked=1") as r:
            assert "revoked" in await r.text()


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "", "expiry": "never"}, "needs a name"),
    ({"name": "x", "expiry": "date", "date": "2001-01-01"}, "in the past"),
    ({"name": "x", "expiry": "forever"}, "choose an expiry"),
])
async def test_bad_token_forms_say_what_is_wrong(gw: AuthGateway, fields: dict[str, str],
                                                 message: str) -> None:
    async with browser() as s:
        page = await sign_in(s, gw)
        async with s.post(gw.gw.http + "/console/models/mock-chat/tokens",
                          data={"csrf": csrf_of(page), **fields}) as r:
            assert r.status == 400
            assert message in await r.text()


async def test_failed_sign_ins_are_slowed(gw: AuthGateway) -> None:
    async with browser() as s:
        for _ in range(3):
            async with s.post(gw.gw.http + "/console/login", data={"credential": "nope"}) as r:
                assert r.status == 401
        started = time.monotonic()
        async with s.post(gw.gw.http + "/console/login", data={"credential": "nope"}) as r:
            assert r.status == 401
        assert time.monotonic() - started >= 0.5


async def test_unknown_models_are_404(gw: AuthGateway) -> None:
    async with browser() as s:
        await sign_in(s, gw)
        async with s.get(gw.gw.http + "/console/models/nope") as r:
            assert r.status == 404


async def test_limits_of_a_token_are_shown_and_edited_in_the_console(gw: AuthGateway) -> None:
    base = gw.gw.http
    async with browser() as s:
        page = await sign_in(s, gw)
        async with s.get(base + "/console/models/mock-chat") as r:
            page = await r.text()
        token_id = re.search(r"/tokens/(tok_[0-9a-f]+)/limits", page)
        assert token_id and "none" in page
        url = f"{base}/console/models/mock-chat/tokens/{token_id.group(1)}/limits"
        async with s.post(url, data={"csrf": csrf_of(page), "rpm": "abc"}) as r:
            assert r.status == 400
            assert "whole number" in await r.text()
        async with s.post(url, data={"csrf": csrf_of(page), "rpm": "5", "tpm": "",
                                     "monthly_tokens": "1000000"}) as r:
            assert r.status == 200
            page = await r.text()
        assert "5 rpm (5 left)" in page and "1000000 /month" in page
        # The gateway holds the token to them from the next request on.
        async with s.post(base + "/v1/chat/completions", json=CHAT,
                          headers={"Authorization": f"Bearer {gw.token}"}) as r:
            assert r.status == 200
            assert r.headers["x-ratelimit-limit-requests"] == "5"


async def test_usage_is_charted_per_day(gw: AuthGateway) -> None:
    base = gw.gw.http
    async with browser() as s:
        for _ in range(3):
            async with s.post(base + "/v1/chat/completions", json=CHAT,
                              headers={"Authorization": f"Bearer {gw.token}"}) as r:
                assert r.status == 200
        await sign_in(s, gw)
        async with s.get(base + "/console/models/mock-chat") as r:
            page = await r.text()
    # three charts of 14 days, and a row of 14 days for the one token that called
    assert page.count('class="col"') == 4 * 14
    assert 'aria-label="Requests per day of default"' in page
    assert "fill h100" in page  # today is the busiest day
    today = datetime.now(UTC).strftime("%m-%d")
    assert f'title="{today}: 3"' in page  # requests today
    assert "default" in page and "No calls" not in page
