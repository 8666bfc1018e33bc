"""CORS (SPEC §13): off by default; with allowed origins, a browser page of one of them may call
the API (preflight and answers), streams and errors included; other origins get nothing."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory

CHAT = {"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}
MODELS: list[dict[str, Any]] = [{"id": "mock-chat", "task": "chat", "provider": "mock"}]


async def test_cors_is_off_by_default(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False}, "models": MODELS})
    async with aiohttp.ClientSession() as s, s.post(
            gw.http + "/v1/chat/completions", json=CHAT,
            headers={"Origin": "https://app.example.com"}) as r:
        assert r.status == 200
        assert "Access-Control-Allow-Origin" not in r.headers


async def test_an_allowed_origin_may_call_the_api(gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory({"auth": {"enabled": False}, "models": MODELS,
                                "cors": {"allow_origins": ["https://app.example.com"]}})
    origin = {"Origin": "https://app.example.com"}
    async with aiohttp.ClientSession() as s:
        async with s.options(gw.http + "/v1/chat/completions", headers={
                **origin, "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type"}) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
            assert r.headers["Access-Control-Max-Age"] == "600"
        for body in (CHAT, {**CHAT, "stream": True}, {"model": "nope", **CHAT}):
            async with s.post(gw.http + "/v1/chat/completions", json=body,
                              headers=origin) as r:
                await r.read()
                assert r.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
                assert "x-ratelimit-remaining-requests" in \
                    r.headers["Access-Control-Expose-Headers"]
                assert r.headers["Vary"] == "Origin"
        async with s.post(gw.http + "/v1/chat/completions", json=CHAT,
                          headers={"Origin": "https://evil.example"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers
        async with s.options(gw.http + "/v1/chat/completions", headers={
                "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}) as r:
            assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path",
                                    "ftp://x.example"])
async def test_an_origin_must_be_an_origin(gateway_factory: GatewayFactory, origin: str) -> None:
    from gateway_common.config import ConfigError

    with pytest.raises(ConfigError, match=r"cors.allow_origins\[0\]"):
        await gateway_factory({"auth": {"enabled": False}, "models": MODELS,
                               "cors": {"allow_origins": [origin]}})
