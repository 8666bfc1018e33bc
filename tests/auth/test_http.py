"""Access tokens through the HTTP edge: 401 (with WWW-Authenticate: Bearer) and 403 in each
dialect's error shape, the official SDK's exception classes, the /admin routes, and secrets that
never reach logs, metrics or error bodies."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from gateway_core.auth.service import make_token
from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import AuthGateway, auth_config, random_secret
from tests.conftest import GatewayFactory

CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def _credential(gw: AuthGateway, case: str) -> dict[str, str]:
    if case == "missing":
        return {}
    if case == "malformed":
        return {"Authorization": "Basic dXNlcjpwYXNz"}
    if case == "unknown":
        return auth(random_secret())
    if case == "non-ascii":  # not valid gRPC metadata: refused, never a 500 on either transport
        return {"Authorization": "Bearer igw_\xe9t\xe9", "x-api-key": "cl\xe9\t"}
    if case == "expired":
        assert gw.gw.core.auth is not None
        record, secret = make_token("old", ("*",), time.time() - 1)
        await gw.gw.core.auth.store.create_token(record)
        return auth(secret)
    if case == "revoked":
        token_id, secret = await gw.create("*")
        await gw.revoke(token_id)
        return auth(secret)
    _, secret = await gw.create("mock-embedding")  # forbidden on mock-chat
    return auth(secret)


@pytest.mark.parametrize("case", ["missing", "malformed", "unknown", "non-ascii", "expired",
                                  "revoked", "forbidden"])
async def test_rejections_over_http(auth_gw: AuthGateway, http: aiohttp.ClientSession,
                                    case: str) -> None:
    headers = await _credential(auth_gw, case)
    for body in (CHAT, {**CHAT, "stream": True}):
        async with http.post(f"{auth_gw.gw.http}/v1/chat/completions", json=body,
                             headers=headers) as r:
            payload = await r.json()
            if case == "forbidden":
                assert r.status == 403
                assert "WWW-Authenticate" not in r.headers
                assert payload["error"]["type"] == "permission_error"
                assert "may not call the model 'mock-chat'" in payload["error"]["message"]
            else:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert payload["error"]["type"] == "authentication_error"
                assert payload["error"]["code"] == "invalid_api_key"
            assert r.headers["x-should-retry"] == "false"
            assert r.content_type == "application/json"  # not an SSE stream
            assert set(payload["error"]) == {"message", "type", "param", "code"}


async def test_each_dialect_answers_in_its_own_shape(
    gateway_factory: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    data = auth_config(tmp_path / "data")
    data["endpoints"] = {"ep1": ["mock-chat"]}
    data["tgi_model"] = "mock-completion"
    gw = await open_auth_gateway(gateway_factory, data)
    _, chat_only = await gw.create("mock-chat")
    base = gw.gw.http
    routes: list[tuple[str, str, str, dict[str, Any] | None]] = [
        ("openai", "POST", "/v1/chat/completions", CHAT),
        ("openai", "GET", "/v1/models", None),
        ("openai", "POST", "/v1/embeddings", {"model": "mock-chat", "input": "x"}),
        ("endpoint", "POST", "/v2/ep1/openai/v1/chat/completions", CHAT),
        ("unified", "POST", "/v1/inference/chat", CHAT),
        ("tgi", "POST", "/generate", {"inputs": "hi"}),
        ("oicm", "POST", "/models/mock-chat/proxy/v1/chat/completions", {"inputs": "hi"}),
        ("oicm", "POST", "/models/mock-classifier/proxy/classify", {"inputs": "good"}),
        ("mlflow", "POST", "/gateway/chat/invocations", {"messages": CHAT["messages"]}),
    ]
    try:
        for dialect, method, path, body in routes:
            async with http.request(method, base + path, json=body) as r:
                assert r.status == 401, (path, await r.text())
                assert r.headers["WWW-Authenticate"] == "Bearer"
                _assert_shape(dialect, await r.json(), "an access token is required")
        # A valid token on a model it may not call: 403 in the same shapes.
        forbidden: list[tuple[str, str, str, dict[str, Any]]] = [
            ("openai", "POST", "/v1/embeddings", {"model": "mock-embedding", "input": "x"}),
            ("unified", "POST", "/v1/inference/chat", {**CHAT, "model": "mock-completion"}),
            ("tgi", "POST", "/generate", {"inputs": "hi"}),
            ("oicm", "POST", "/models/mock-classifier/proxy/classify", {"inputs": "good"}),
            ("mlflow", "POST", "/gateway/embeddings/invocations", {"input": "x"}),
        ]
        for dialect, method, path, body in forbidden:
            async with http.request(method, base + path, json=body, headers=auth(chat_only)) as r:
                assert r.status == 403, (path, await r.text())
                _assert_shape(dialect, await r.json(), "may not call the model")
        # The unified dialect's x-api-key.
        async with http.post(f"{base}/v1/inference/chat", json=CHAT,
                             headers={"x-api-key": chat_only}) as r:
            assert r.status == 200, await r.text()
    finally:
        await gw.channel.close()


def _assert_shape(dialect: str, body: dict[str, Any], fragment: str) -> None:
    if dialect == "tgi":
        assert isinstance(body["error"], str) and fragment in body["error"]
        assert "error_type" in body
    elif dialect == "mlflow":
        assert fragment in body["detail"] and body["error_code"] in (
            "UNAUTHENTICATED", "PERMISSION_DENIED")
    elif dialect == "unified":
        assert "schema" in body and fragment in body["error"]["message"]
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert fragment in body["error"]["message"]


async def test_the_openai_sdk_raises_its_auth_exceptions(auth_gw: AuthGateway) -> None:
    base = f"{auth_gw.gw.http}/v1"
    messages: Any = [{"role": "user", "content": "hi"}]
    nobody = openai.AsyncOpenAI(base_url=base, api_key="sk-not-ours", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        await nobody.chat.completions.create(model="mock-chat", messages=messages)
    assert info.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        await nobody.models.list()
    _, secret = await auth_gw.create("mock-embedding")
    scoped = openai.AsyncOpenAI(base_url=base, api_key=secret, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await scoped.chat.completions.create(model="mock-chat", messages=messages)
    assert denied.value.status_code == 403
    assert [m.id async for m in scoped.models.list()] == ["mock-embedding"]
    emb = await scoped.embeddings.create(model="mock-embedding", input="x")
    assert emb.data
    full = openai.AsyncOpenAI(base_url=base, api_key=auth_gw.token, max_retries=0)
    resp = await full.chat.completions.create(model="mock-chat", messages=messages)
    assert resp.choices[0].message.content == "This is a mock reply to: hi"


async def test_admin_routes(auth_gw: AuthGateway, http: aiohttp.ClientSession) -> None:
    base, admin = f"{auth_gw.gw.http}/admin", auth(auth_gw.admin)
    async with http.post(f"{base}/tokens", headers=admin, json={
            "name": "reports", "models": ["chat"], "expires_in": "30d"}) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    secret, token_id = created.pop("secret"), created["id"]
    assert secret.startswith("igw_") and created["models"] == ["mock-chat"]
    assert created["status"] == "active" and created["last_used_at"] is None
    assert abs(created["expires_at"] - (time.time() + 30 * 86400)) < 5
    async with http.post(f"{auth_gw.gw.http}/v1/chat/completions", json=CHAT,
                         headers=auth(secret)) as r:
        assert r.status == 200
    async with http.get(f"{base}/tokens/{token_id}", headers=admin) as r:
        got = await r.json()
        assert got["name"] == "reports" and secret not in await r.text()
    async with http.get(f"{base}/tokens", headers=admin, params={"model": "mock-chat"}) as r:
        assert {t["name"] for t in (await r.json())["data"]} == {"reports", "default"}
    async with http.get(f"{base}/usage", headers=admin,
                        params={"token_id": token_id, "since": "1h"}) as r:
        rows = (await r.json())["data"]
        assert [(u["model"], u["requests"], u["errors"]) for u in rows] == [("mock-chat", 1, 0)]
    async with http.get(f"{base}/usage", headers=admin, params={"group_by": "model"}) as r:
        assert (await r.json())["data"][0]["token_id"] is None
    async with http.delete(f"{base}/tokens/{token_id}", headers=admin) as r:
        assert r.status == 200 and (await r.json())["status"] == "revoked"
    async with http.post(f"{base}/tokens/{token_id}/revoke", headers=admin) as r:
        assert r.status == 200
    async with http.post(f"{auth_gw.gw.http}/v1/chat/completions", json=CHAT,
                         headers=auth(secret)) as r:
        assert r.status == 401
    async with http.get(f"{base}/tokens", headers=admin) as r:
        assert token_id not in {t["id"] for t in (await r.json())["data"]}
    async with http.get(f"{base}/tokens", headers=admin,
                        params={"include_revoked": "true"}) as r:
        assert token_id in {t["id"] for t in (await r.json())["data"]}
    async with http.get(f"{base}/models", headers=admin) as r:
        assert len((await r.json())["data"]) == 10

    bad: list[tuple[str, str, dict[str, str], Any, int, str]] = [
        ("GET", "/tokens", {}, None, 401, "an access token is required"),
        ("GET", "/tokens", auth(auth_gw.token), None, 401, "needs the admin credential"),
        ("POST", "/tokens", admin, {"name": "x", "model": "mock-chat", "scope": 1}, 400,
         "unknown field 'scope'"),
        ("POST", "/tokens", admin, {"name": "x"}, 400, "'models'"),
        ("POST", "/tokens", admin, {"name": "x", "models": ["ghost"]}, 400, "does not exist"),
        ("POST", "/tokens", admin, {"name": "x", "models": ["*"], "expires_in": "soon"}, 400,
         "not a duration"),
        ("POST", "/tokens", admin, {"name": "x", "models": ["*"], "expires_at": "2001-01-01"},
         400, "in the past"),
        ("GET", "/tokens/tok_nope", admin, None, 404, "no token with id"),
        ("DELETE", "/tokens/tok_nope", admin, None, 404, "no token with id"),
        ("GET", "/usage?group_by=day", admin, None, 400, "'group_by' must be one of"),
        ("GET", "/tokens?include_revoked=maybe", admin, None, 400, "true or false"),
    ]
    for method, path, headers, body, status, fragment in bad:
        async with http.request(method, base + path, headers=headers, json=body) as r:
            payload = await r.json()
            assert r.status == status, (path, payload)
            assert fragment in payload["error"]["message"], payload
            assert payload["error"]["request_id"]


async def test_secrets_never_reach_logs_metrics_or_errors(
    gateway_factory: GatewayFactory, tmp_path: Path, http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    secrets = [gw.admin, gw.token]
    bodies: list[str] = []
    try:
        base = gw.gw.http
        async with http.post(f"{base}/admin/tokens", headers=auth(gw.admin),
                             json={"name": "leak-check", "models": ["mock-embedding"]}) as r:
            created = await r.json()
        secrets.append(created["secret"])
        attempts = [
            auth(created["secret"]), auth(gw.token), auth(gw.admin), auth(random_secret()),
            {"Authorization": f"Basic {created['secret']}"}, {"x-api-key": gw.admin},
            auth(created["secret"][:-1]), auth(gw.token + "x"),
        ]
        for headers in attempts:
            for path, body in (("/v1/chat/completions", CHAT), ("/v1/chat/completions",
                               {**CHAT, "stream": True}), ("/admin/tokens", None)):
                async with http.request("POST" if body else "GET", base + path, json=body,
                                        headers=headers) as r:
                    bodies.append(await r.text())
        await gw.revoke(created["id"])
        async with http.post(f"{base}/v1/chat/completions", json=CHAT,
                             headers=auth(created["secret"])) as r:
            assert r.status == 401
            bodies.append(await r.text())
        async with http.get(f"{base}/metrics") as r:
            metrics = await r.text()
        assert 'gateway_auth_failures_total{reason="revoked"}' in metrics
    finally:
        await gw.channel.close()
    logs = caplog.text + "".join(repr(rec.args) for rec in caplog.records)
    assert "fresh token store" in logs  # the log was captured
    for secret in secrets:
        for where, text in (("logs", logs), ("metrics", metrics), ("bodies", "".join(bodies))):
            assert secret not in text, f"a secret leaked into {where}"
            assert secret[8:] not in text, f"part of a secret leaked into {where}"
