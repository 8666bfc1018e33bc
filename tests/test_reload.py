"""Live reload (SPEC §13): POST /admin/reload (and SIGHUP, which does the same in ``serve``)
re-reads the config file: models added, removed or changed take effect for new requests while a
stream in flight finishes on the old; an invalid file is refused naming the bad key, and the
running models stay."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway_common.config import load_config
from tests.conftest import free_ports, start_gateway
from tests.fakes.faulty_upstream import FaultyUpstream


@pytest.fixture(autouse=True)
def _admin(monkeypatch: pytest.MonkeyPatch) -> str:
    secret = "igw_admin_" + "r" * 40
    monkeypatch.setenv("IGW_TEST_RELOAD_ADMIN", secret)
    return secret


def _config(tmp_path: Path, models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"auth": {"enabled": True, "admin_token_env": "IGW_TEST_RELOAD_ADMIN"},
            "storage": {"data_dir": str(tmp_path / "data")}, "models": models}


def _model(mid: str, url: str) -> dict[str, Any]:
    return {"id": mid, "task": "chat", "provider": "openai", "upstream_url": url}


async def _chat(s: aiohttp.ClientSession, base: str, token: str, model: str,
                stream: bool = False) -> tuple[int, str]:
    async with s.post(base + "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"},
                      json={"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": "hi"}]}) as r:
        return r.status, await r.text()


async def test_a_reload_applies_new_models_while_a_stream_finishes_on_the_old(
        tmp_path: Path, _admin: str) -> None:
    old = await FaultyUpstream("old", "stall", delay=1.0).start()
    new = await FaultyUpstream("new", "ok").start()
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, [_model("a", old.base_url)])))
    gw = await start_gateway(load_config(path), "local", config_path=str(path))
    try:
        admin = {"Authorization": f"Bearer {_admin}"}
        async with aiohttp.ClientSession() as s:
            async with s.post(gw.http + "/admin/tokens", headers=admin,
                              json={"name": "all", "models": ["*"]}) as r:
                token = (await r.json())["secret"]
            # A stream in flight on model a's old upstream (it stalls 1 s after two tokens).
            in_flight = asyncio.ensure_future(_chat(s, gw.http, token, "a", stream=True))
            for _ in range(500):
                if old.in_flight:
                    break
                await asyncio.sleep(0.01)
            # a moves to the new upstream; b is added.
            path.write_text(yaml.safe_dump(_config(tmp_path, [
                _model("a", new.base_url), _model("b", new.base_url)])))
            async with s.post(gw.http + "/admin/reload", headers=admin) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["models"] == ["a", "b"]
            status, body = await _chat(s, gw.http, token, "b")
            assert status == 200 and "new says hello world" in body
            status, body = await _chat(s, gw.http, token, "a")
            assert status == 200 and "new says hello world" in body
            status, body = await in_flight  # finished on the old upstream
            assert status == 200 and "old" in body and "[DONE]" in body and '"error"' not in body
            # An invalid file is refused with the exact key; the running models stay.
            broken = _config(tmp_path, [_model("a", new.base_url)])
            broken["models"][0]["provider"] = "nope"
            path.write_text(yaml.safe_dump(broken))
            async with s.post(gw.http + "/admin/reload", headers=admin) as r:
                assert r.status == 400
                message = (await r.json())["error"]["message"]
            assert "models[0].provider" in message and "unknown provider" in message
            status, _ = await _chat(s, gw.http, token, "b")
            assert status == 200
            # Removed models are gone after a good reload.
            path.write_text(yaml.safe_dump(_config(tmp_path, [_model("a", new.base_url)])))
            async with s.post(gw.http + "/admin/reload", headers=admin) as r:
                assert r.status == 200
            status, _ = await _chat(s, gw.http, token, "b")
            assert status == 404
            # A model token cannot reload.
            async with s.post(gw.http + "/admin/reload",
                              headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 401
    finally:
        await gw.stop()
        await old.stop()
        await new.stop()


async def test_sighup_reloads_a_serve_process(tmp_path: Path, _admin: str) -> None:
    up = await FaultyUpstream("a", "ok").start()
    path = tmp_path / "gateway.yaml"
    data = _config(tmp_path, [_model("a", up.base_url)])
    data["auth"] = {"enabled": False}
    path.write_text(json.dumps(data))
    http, grpc_port = free_ports(2)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway_cli.cli", "serve", "--config", str(path),
        "--http-port", str(http), "--grpc-port", str(grpc_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ})
    base = f"http://127.0.0.1:{http}"
    try:
        async with aiohttp.ClientSession() as s:
            for _ in range(600):
                try:
                    async with s.get(base + "/health/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)  # polling readiness
            data["models"].append(_model("b", up.base_url))
            path.write_text(json.dumps(data))
            proc.send_signal(signal.SIGHUP)
            for _ in range(200):
                status, _ = await _chat(s, base, "", "b")
                if status == 200:
                    break
                await asyncio.sleep(0.02)  # the reload runs in the background
            assert status == 200
    finally:
        proc.terminate()
        await proc.wait()
        await up.stop()
