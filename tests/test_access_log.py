"""The access log (SPEC §13): one line per request, with what an operator needs to find it and
never a secret; gRPC callers' calls too (logged by the core), the edge's calls once."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gateway_common import access_log
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import auth_config
from tests.conftest import GatewayFactory


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)


@pytest.fixture(autouse=True)
def _everything_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def _access(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]


async def test_one_line_per_request_with_what_served_it_and_no_secret(
        gateway_factory: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    base = gw.gw.http
    auth = {"Authorization": f"Bearer {gw.token}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(base + "/v1/chat/completions", headers=auth, json={
                "model": "mock-chat", "user": "alice",
                "messages": [{"role": "user", "content": "hello"}]}) as r:
            assert r.status == 200
            rid = r.headers["X-Request-Id"]
        async with s.post(base + "/v1/chat/completions", headers=auth, json={
                "model": "mock-chat", "stream": True,
                "messages": [{"role": "user", "content": "hello"}]}) as r:
            await r.read()
            stream_rid = r.headers["X-Request-Id"]
        async with s.post(base + "/v1/chat/completions", headers=auth,
                          json={"model": "nope", "messages": []}) as r:
            assert r.status >= 400
        bad = "igw_" + "x" * 43
        async with s.post(base + "/v1/chat/completions",
                          headers={"Authorization": f"Bearer {bad}"},
                          json={"model": "mock-chat",
                                "messages": [{"role": "user", "content": "hello"}]}) as r:
            assert r.status == 401
    got = _access(caplog)
    assert len(got) == 4, got
    first = next(line for line in got if line["request_id"] == rid)
    assert first["dialect"] == "openai" and first["route"] == "/v1/chat/completions"
    assert first["method"] == "POST" and first["status"] == 200
    assert first["model"] == "mock-chat" and first["served_model"] == "mock-chat"
    assert first["attempts"] == 1 and first["endpoint"] == "local"
    assert first["token_id"].startswith("tok_") and first["end_user"] == "alice"
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert first["duration_ms"] > 0 and first["time"].endswith("Z")
    streamed = next(line for line in got if line["request_id"] == stream_rid)
    assert streamed["ttft_ms"] > 0 and streamed["completion_tokens"] > 0
    invalid = next(line for line in got if line["status"] == 400)
    assert invalid["error"]
    refused = [line for line in got if line["status"] == 401]
    assert refused and refused[0]["error"] and "token_id" not in refused[0]
    for record in caplog.records:  # every log line of the process, not only the access log
        text = record.getMessage()
        assert gw.token not in text and bad not in text and gw.admin not in text


async def test_grpc_callers_are_logged_by_the_core_and_edge_calls_once(
        gateway_factory: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    async with grpc.aio.insecure_channel(gw.gw.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        md = (("authorization", f"Bearer {gw.token}"), ("igw-request-id", "grpc-call-1"))
        request = pb.ChatRequest(model="mock-chat",
                                 messages=[pb.ChatMessage(role="user", content="hi")])
        await stub.Chat(request, metadata=md, timeout=5)
        chunks = [c async for c in stub.ChatStream(request, metadata=md, timeout=5)]
        assert chunks
    got = [line for line in _access(caplog) if line["dialect"] == "grpc"]
    assert [line["route"].rsplit("/", 1)[-1] for line in got] == ["Chat", "ChatStream"]
    assert all(line["status"] == "OK" and line["token_id"].startswith("tok_") for line in got)
    assert got[1]["ttft_ms"] > 0 and got[0]["completion_tokens"] > 0
    caplog.clear()
    async with aiohttp.ClientSession() as s, s.post(
            gw.gw.http + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {gw.token}"},
            json={"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status == 200
    assert [line["dialect"] for line in _access(caplog)] == ["openai"]


async def test_serve_writes_buffered_lines_to_stdout_text_or_json_or_none() -> None:
    out = io.BytesIO()
    try:
        access_log.setup("text", out)
        access_log.write({"request_id": "r1", "status": 200, "model": None})
        assert out.getvalue() == b""  # buffered: sent with the next flush
        await asyncio.sleep(access_log.FLUSH_SECONDS * 2)
        text = out.getvalue().decode()
        assert "request_id=r1 status=200" in text and "model" not in text
        access_log.setup("json", out)
        for i in range(3):
            access_log.write({"request_id": f"j{i}"})
        access_log.flush()
        lines = out.getvalue().decode().splitlines()[1:]
        assert [json.loads(line)["request_id"] for line in lines] == ["j0", "j1", "j2"]
        access_log.setup("off", out)
        assert not access_log.enabled()
        access_log.write({"request_id": "r2"})
        access_log.flush()
        assert b"r2" not in out.getvalue()
    finally:
        access_log.reset()


async def test_a_refused_request_names_its_token_too(
        gateway_factory: GatewayFactory, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    data = auth_config(tmp_path / "data")
    for m in data["models"]:
        if m["id"] == "mock-chat":
            m["limits"] = {"rpm": 1}
    gw = await open_auth_gateway(gateway_factory, data)
    async with aiohttp.ClientSession() as s:
        for _ in range(2):
            async with s.post(gw.gw.http + "/v1/chat/completions",
                              headers={"Authorization": f"Bearer {gw.token}"},
                              json={"model": "mock-chat",
                                    "messages": [{"role": "user", "content": "hi"}]}) as r:
                await r.read()
    refused = [line for line in _access(caplog) if line["status"] == 429]
    assert refused and refused[0]["token_id"].startswith("tok_")
    assert refused[0]["error"] == "rate_limit_exceeded"
