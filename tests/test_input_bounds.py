"""One set of input bounds for every route and dialect: the prompt/input size limit (413) on every
task, JSON routes refuse a body sent as another media type (415)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from gateway_common.defaults import default_config_data
from tests.conftest import Gateway, GatewayFactory

LIMIT = 1000
BIG = "w" * (LIMIT + 1)


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> Gateway:
    data = default_config_data()
    data["auth"] = {"enabled": False}
    data["limits"] = {"max_prompt_chars": LIMIT}
    return await gateway_factory(data)


def oicm(model: str, path: str) -> str:
    return f"/models/{model}/proxy/v1/{path}"


# (path, body with an input over the limit): every task, in each dialect that serves it.
OVERSIZED: list[tuple[str, Any]] = [
    ("/v1/chat/completions", {"model": "mock-chat",
                              "messages": [{"role": "user", "content": BIG}]}),
    ("/v1/completions", {"model": "mock-completion", "prompt": BIG}),
    ("/v1/embeddings", {"model": "mock-embedding", "input": BIG}),
    ("/v1/embeddings", {"model": "mock-embedding", "input": ["w" * 600, "w" * 600]}),
    ("/v1/rerank", {"model": "mock-rerank", "query": BIG, "documents": ["a"]}),
    ("/v1/rerank", {"model": "mock-rerank", "query": "q", "documents": ["w" * 600] * 2}),
    ("/v1/audio/speech", {"model": "mock-speech", "input": BIG, "voice": "alloy"}),
    ("/v1/images/generations", {"model": "mock-image", "prompt": BIG}),
    ("/v1/inference/chat", {"model": "mock-chat", "messages": [{"role": "user",
                                                                "content": BIG}]}),
    ("/generate", {"inputs": BIG}),
    ("/gateway/mock-embedding/invocations", {"input": BIG}),
    (oicm("mock-embedding", "embed"), {"inputs": BIG}),
    (oicm("mock-rerank", "rerank"), {"query": "q", "texts": [BIG]}),
    (oicm("mock-classifier", "classify"), {"inputs": BIG}),
    (oicm("mock-classifier", "classify"), {"inputs": ["w" * 600, "w" * 600]}),
    (oicm("mock-translation", "translate"), {"text": BIG}),
    (oicm("mock-image", "generate-image"), {"prompt": BIG}),
    (oicm("mock-speech", "generate-speech"), {"prompt": BIG}),
    (oicm("mock-predict", "predict"), [[1.5] * 400]),
]


@pytest.mark.parametrize(("path", "body"), OVERSIZED, ids=[p for p, _ in OVERSIZED])
async def test_every_task_bounds_its_input(gw: Gateway, path: str, body: Any) -> None:
    async with aiohttp.ClientSession() as s, s.post(gw.http + path, json=body) as r:
        text = await r.text()
        assert r.status == 413, text
        assert "the limit is" in text


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x",
    "application/xml", "image/png"])
async def test_a_json_route_refuses_another_media_type_with_415(
        gw: Gateway, content_type: str) -> None:
    body = b'{"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}'
    async with aiohttp.ClientSession() as s, s.post(
            gw.http + "/v1/chat/completions", data=body,
            headers={"Content-Type": content_type}) as r:
        assert r.status == 415
        payload = await r.json()
        assert "application/json" in payload["error"]["message"]
        assert content_type not in payload["error"]["message"]


@pytest.mark.parametrize("content_type", [
    None, "application/json", "application/json; charset=utf-8", "Application/JSON",
    "application/vnd.api+json"])
async def test_json_and_an_absent_content_type_are_accepted(
        gw: Gateway, content_type: str | None) -> None:
    body = b'{"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}'
    headers = {"Content-Type": content_type} if content_type else {}
    async with aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as s, s.post(
            gw.http + "/v1/chat/completions", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
