"""Limits of access tokens (SPEC §11): set at creation through the admin API and the CLI, changed
later, shown with what is left in the token listing and /admin/usage; a token's priority class."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import auth_config
from tests.conftest import GatewayFactory

CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)


async def _call(s: aiohttp.ClientSession, method: str, url: str, secret: str,
                body: Any = None) -> tuple[int, dict[str, str], Any]:
    async with s.request(method, url, json=body,
                         headers={"Authorization": f"Bearer {secret}"}) as r:
        return r.status, dict(r.headers), await r.json(content_type=None)


async def test_a_token_created_with_limits_is_held_to_them(
        gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    base = gw.gw.http
    async with aiohttp.ClientSession() as s:
        status, _, token = await _call(s, "POST", base + "/admin/tokens", gw.admin, {
            "name": "app", "models": ["mock-chat"], "limits": {"rpm": 2, "tpm": 100000},
            "priority": "sheddable"})
        assert status == 201, token
        assert token["limits"] == {"rpm": 2, "tpm": 100000}
        assert token["remaining"] == {"rpm": 2, "tpm": 100000}
        assert token["priority"] == "sheddable"
        secret = token["secret"]
        for left in ("1", "0"):
            status, headers, _ = await _call(s, "POST", base + "/v1/chat/completions", secret,
                                             CHAT)
            assert status == 200
            assert headers["x-ratelimit-remaining-requests"] == left
            assert headers["x-ratelimit-limit-tokens"] == "100000"
        status, headers, body = await _call(s, "POST", base + "/v1/chat/completions", secret,
                                            CHAT)
        assert status == 429
        assert "token 'app' is over its limit of 2 requests per minute" in \
            body["error"]["message"]
        assert secret not in json.dumps(body)
        # Another token is not held to this one's limits.
        status, _, _ = await _call(s, "POST", base + "/v1/chat/completions", gw.token, CHAT)
        assert status == 200

        status, _, listing = await _call(s, "GET", base + "/admin/tokens", gw.admin)
        mine = next(t for t in listing["data"] if t["id"] == token["id"])
        assert mine["remaining"]["rpm"] == 0
        assert 0 < mine["remaining"]["tpm"] <= 100000  # (a few tokens refill in milliseconds)

        # Raised later: effective from the next request on.
        status, _, updated = await _call(s, "PATCH", f"{base}/admin/tokens/{token['id']}",
                                         gw.admin, {"limits": {"rpm": 100}})
        assert status == 200, updated
        assert updated["limits"] == {"rpm": 100} and updated["priority"] == "sheddable"
        status, headers, _ = await _call(s, "POST", base + "/v1/chat/completions", secret, CHAT)
        assert status == 200
        assert headers["x-ratelimit-limit-requests"] == "100"
        assert "x-ratelimit-limit-tokens" not in headers

        status, _, usage = await _call(s, "GET", base + "/admin/usage?group_by=token", gw.admin)
        row = next(r for r in usage["data"] if r["token_id"] == token["id"])
        assert row["limits"] == {"rpm": 100} and row["remaining"]["rpm"] < 100


@pytest.mark.parametrize(("body", "fragment"), [
    ({"limits": {"rpm": 0}}, "limits.rpm"),
    ({"limits": {"rpm": "60"}}, "limits.rpm"),
    ({"limits": {"per_hour": 5}}, "unknown limit"),
    ({"limits": [1]}, "'limits' must be an object"),
    ({"priority": "urgent"}, "priority must be one of"),
])
async def test_bad_limits_are_400(gateway_factory: GatewayFactory, tmp_path: Path,
                                  body: dict[str, Any], fragment: str) -> None:
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    async with aiohttp.ClientSession() as s:
        status, _, answer = await _call(s, "POST", gw.gw.http + "/admin/tokens", gw.admin,
                                        {"name": "x", "models": ["*"], **body})
    assert status == 400, answer
    assert fragment in answer["error"]["message"]


async def test_a_token_may_not_ask_for_a_class_above_its_own(
        gateway_factory: GatewayFactory, tmp_path: Path) -> None:
    """The token's priority class caps what its requests may ask for (x-gateway-priority):
    seen in the admitted requests by class while one is in flight."""
    import asyncio

    from prometheus_client import REGISTRY

    from tests.fakes.faulty_upstream import FaultyUpstream

    slow = await FaultyUpstream("a", "slow_headers", delay=1.0).start()
    try:
        data = auth_config(tmp_path / "data")
        data["models"].append({"id": "slow", "task": "chat", "provider": "openai",
                               "upstream_url": slow.base_url})
        gw = await open_auth_gateway(gateway_factory, data)
        async with aiohttp.ClientSession() as s:
            _, _, token = await _call(s, "POST", gw.gw.http + "/admin/tokens", gw.admin,
                                      {"name": "low", "models": ["*"],
                                       "priority": "sheddable"})
            call = asyncio.ensure_future(s.post(
                gw.gw.http + "/v1/chat/completions",
                json={**CHAT, "model": "slow"},
                headers={"Authorization": f"Bearer {token['secret']}",
                         "x-gateway-priority": "critical"}))
            seen = {}
            for _ in range(200):
                seen = {p: REGISTRY.get_sample_value(
                    "gateway_admitted_requests", {"model": "slow", "priority": p})
                    for p in ("critical", "standard", "sheddable")}
                if seen["sheddable"]:
                    break
                await asyncio.sleep(0.01)
            assert seen == {"critical": 0.0, "standard": 0.0, "sheddable": 1.0}
            resp = await call
            assert resp.status == 200
            resp.release()
    finally:
        await slow.stop()


def test_the_cli_sets_and_shows_limits(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "gateway_cli.cli", "tokens"]
    data = ["--data-dir", str(tmp_path / "data")]
    made = subprocess.run([*cli, "create", "--name", "app", "--model", "*", "--rpm", "60",
                           "--tpm", "100000", "--max-concurrency", "4", "--monthly-tokens",
                           "5000000", "--json", *data], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["limits"] == {"rpm": 60, "tpm": 100000, "max_concurrency": 4,
                               "monthly_tokens": 5000000}
    updated = subprocess.run([*cli, "update", token["id"], "--rpm", "30", "--priority",
                              "critical", *data], capture_output=True, text=True, timeout=60)
    assert updated.returncode == 0, updated.stderr
    assert "rpm 30" in updated.stdout and "priority critical" in updated.stdout
    listed = subprocess.run([*cli, "list", *data], capture_output=True, text=True, timeout=60)
    assert "LIMITS" in listed.stdout and "rpm 30" in listed.stdout
    bad = subprocess.run([*cli, "update", token["id"], "--rpm", "0", *data],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "at least 1" in bad.stderr


async def test_jwt_callers_are_limited_by_subject(
        gateway_factory: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import jwt

    secret = "a-development-secret-of-more-than-32-chars"
    monkeypatch.setenv("IGW_TEST_JWT_SECRET", secret)
    gw = await open_auth_gateway(gateway_factory, auth_config(
        tmp_path / "data", jwt={"enabled": True, "algorithms": ["HS256"],
                                "secret_env": "IGW_TEST_JWT_SECRET", "limits": {"rpm": 1}}))

    def token(subject: str) -> str:
        now = int(time.time())
        return jwt.encode({"sub": subject, "iat": now, "exp": now + 300, "models": ["*"]},
                          secret, algorithm="HS256")

    async with aiohttp.ClientSession() as s:
        url = gw.gw.http + "/v1/chat/completions"
        status, _, _ = await _call(s, "POST", url, token("svc-a"), CHAT)
        assert status == 200
        # A new JWT of the same subject shares its limit; another subject has its own.
        status, _, body = await _call(s, "POST", url, token("svc-a"), CHAT)
        assert status == 429
        assert "JWT subject 'svc-a'" in body["error"]["message"]
        status, _, _ = await _call(s, "POST", url, token("svc-b"), CHAT)
        assert status == 200
