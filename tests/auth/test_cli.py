"""``inference-gateway tokens`` against the local store and a running gateway (--url, --core), and
``serve`` printing a fresh store's credentials once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import grpc
import pytest

from gateway_cli.cli import main
from gateway_cli.tokens_cli import note_config
from gateway_common.config import StorageConfig, load_config
from tests.auth.kit import AuthGateway, bearer, chat, reason_of
from tests.conftest import closed_port, free_ports

CLI = str(Path(sys.executable).parent / "inference-gateway")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["tokens", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tokens_on_the_local_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(tmp_path / "data"))
    code, out, _ = run(capsys, "create", *d, "--model", "mock-chat", "--name", "ci", "--json")
    assert code == 0
    ci = json.loads(out)
    assert ci["secret"].startswith("igw_") and ci["models"] == ["mock-chat"]
    assert ci["expires_at"] is None and ci["status"] == "active"

    code, out, _ = run(capsys, "create", *d, "--model", "chat", "--model", "mock-embedding",
                       "--name", "two models", "--expires", "30d")
    assert code == 0
    assert "shown this once" in out
    secret = re.search(r"igw_[A-Za-z0-9_-]{43}", out)
    assert secret is not None

    code, out, _ = run(capsys, "list", *d, "--json")
    tokens = json.loads(out)
    assert {t["name"] for t in tokens} == {"ci", "two models"}
    assert all("secret" not in t for t in tokens) and secret.group() not in out
    code, out, _ = run(capsys, "list", *d, "--model", "mock-embedding", "--json")
    assert [t["name"] for t in json.loads(out)] == ["two models"]
    code, out, _ = run(capsys, "list", *d)
    assert "ci" in out and "PREFIX" in out and ci["secret"] not in out

    code, out, _ = run(capsys, "revoke", *d, ci["id"])
    assert code == 0 and "Revoked" in out
    code, out, _ = run(capsys, "list", *d, "--json")
    assert [t["name"] for t in json.loads(out)] == ["two models"]
    code, out, _ = run(capsys, "list", *d, "--all", "--json")
    assert {t["status"] for t in json.loads(out)} == {"active", "revoked"}

    for argv, status, fragment in [
        (("create", "--model", "ghost", "--name", "x"), 2,
         "the model 'ghost' is not one of the embedded mock models"),
        (("create", "--model", "mock-chat", "--name", "x", "--expires", "soon"), 2,
         "is not an expiry"),
        (("create", "--model", "mock-chat", "--name", "x", "--expires", "2001-01-01"), 2,
         "in the past"),
        (("revoke", "tok_nope"), 1, "no token with id 'tok_nope'"),
        (("list", "--url", "http://127.0.0.1:9"), 2, "the admin credential is needed"),
    ]:
        code, _, err = run(capsys, *argv, *d)
        assert (code, fragment in err) == (status, True), err
    assert main(["tokens"]) == 2


async def test_tokens_against_a_running_gateway(
    auth_gw: AuthGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, core = ("--url", auth_gw.gw.http), ("--core", auth_gw.gw.grpc_target)

    async def tokens(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, ["tokens", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = await tokens("create", *url, "--admin-token", auth_gw.admin, "--model",
                                  "mock-chat", "--name", "over-http", "--json")
    assert code == 0, err
    over_http = json.loads(out)
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", auth_gw.admin)  # the default variable
    code, out, err = await tokens("create", *core, "--model", "mock-chat", "--name",
                                  "over-grpc", "--json", "--expires", "1h")
    assert code == 0, err
    over_grpc = json.loads(out)
    for t in (over_http, over_grpc):
        resp = await auth_gw.inference.Chat(chat(), metadata=bearer(t["secret"]), timeout=5)
        assert resp.choices
    for target in (url, core):
        code, out, _ = await tokens("list", *target, "--json", "--model", "mock-chat")
        assert {t["name"] for t in json.loads(out)} == {"default", "over-http", "over-grpc"}
    code, out, _ = await tokens("revoke", *url, over_http["id"])
    assert code == 0 and "Revoked" in out
    code, out, _ = await tokens("revoke", *core, over_grpc["id"], "--json")
    assert json.loads(out)["status"] == "revoked"
    for t in (over_http, over_grpc):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await auth_gw.inference.Chat(chat(), metadata=bearer(t["secret"]), timeout=5)
        assert reason_of(info.value) == "auth_revoked"

    code, _, err = await tokens("list", *url, "--admin-token", auth_gw.token)
    assert code == 1 and "HTTP 401" in err
    code, _, err = await tokens("list", *core, "--admin-token", auth_gw.token)
    assert code == 1 and "UNAUTHENTICATED" in err
    code, _, err = await tokens("create", *core, "--model", "ghost", "--name", "x")
    assert code == 2 and "does not exist" in err
    code, _, err = await tokens("list", "--url", f"http://127.0.0.1:{closed_port()}")
    assert code == 1 and "cannot reach" in err


async def test_local_revocation_reaches_the_running_core(
    auth_gw: AuthGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    token_id, secret = await auth_gw.create("mock-chat")
    assert (await auth_gw.inference.Chat(chat(), metadata=bearer(secret), timeout=5)).choices
    data_dir = auth_gw.gw.config.storage.data_dir
    code = await asyncio.to_thread(main, ["tokens", "revoke", token_id, "--data-dir", data_dir])
    assert code == 0, capsys.readouterr().err
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await auth_gw.inference.Chat(chat(), metadata=bearer(secret), timeout=5)
    assert reason_of(info.value) == "auth_revoked"


async def _serve(data_dir: Path) -> tuple[asyncio.subprocess.Process, str]:
    http_port, grpc_port = free_ports(2)
    env = {k: v for k, v in os.environ.items() if k != "GATEWAY_ADMIN_TOKEN"}
    proc = await asyncio.create_subprocess_exec(
        CLI, "serve", "--data-dir", str(data_dir), "--http-port", str(http_port),
        "--grpc-port", str(grpc_port), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env={**env, "PYTHONUNBUFFERED": "1"})
    return proc, f"http://127.0.0.1:{http_port}"


async def _read_until(proc: asyncio.subprocess.Process, marker: str) -> str:
    assert proc.stdout is not None
    text = ""
    while marker not in text:
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        if not line:
            raise AssertionError(f"serve ended before printing {marker!r}: {text}")
        text += line.decode()
    return text


async def _stop(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    proc.send_signal(signal.SIGTERM)
    out = await asyncio.wait_for(proc.stdout.read(), 15)
    assert await asyncio.wait_for(proc.wait(), 15) == 0
    return out.decode()


def test_local_tokens_take_the_models_of_the_gateways_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --config, a model the embedded defaults lack is refused naming the flag; with the
    config the gateway runs with (given, or noted in the data dir by serve) it is accepted."""
    data = tmp_path / "data"
    config = tmp_path / "gateway.yaml"
    config.write_text(json.dumps({"models": [{"id": "my-model", "task": "chat",
                                              "provider": "mock"}]}))
    d = ("--data-dir", str(data))
    code, _, err = run(capsys, "create", *d, "--model", "my-model", "--name", "x")
    assert code == 2 and "--config PATH" in err and "'my-model'" in err
    code, out, _ = run(capsys, "create", *d, "--config", str(config), "--model", "my-model",
                       "--name", "given", "--json")
    assert code == 0 and json.loads(out)["models"] == ["my-model"]
    # What serve --config gateway.yaml --data-dir data does at start:
    note_config(dataclasses.replace(load_config(str(config)), storage=StorageConfig(
        data_dir=str(data))), str(config))
    code, out, _ = run(capsys, "create", *d, "--model", "my-model", "--name", "noted", "--json")
    assert code == 0 and json.loads(out)["models"] == ["my-model"]
    config.unlink()
    code, _, err = run(capsys, "list", *d)
    assert code == 2 and "--config PATH" in err and str(config) in err


async def test_serve_prints_the_fresh_stores_credentials_once(tmp_path: Path) -> None:
    proc, base = await _serve(tmp_path / "data")
    try:
        printed = await _read_until(proc, "try: curl")
        admin = re.search(r"admin credential\s+(igw_admin_\S+)", printed)
        token = re.search(r"access token\s+(igw_\S+)", printed)
        assert admin is not None and token is not None, printed
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/v1/models",
                                headers={"Authorization": f"Bearer {token.group(1)}"}) as r:
                assert r.status == 200
                assert len((await r.json())["data"]) == 10
            async with http.get(f"{base}/v1/models") as r:
                assert r.status == 401
            async with http.get(f"{base}/admin/tokens",
                                headers={"Authorization": f"Bearer {admin.group(1)}"}) as r:
                assert [t["name"] for t in (await r.json())["data"]] == ["default"]
        await _stop(proc)
        proc, base = await _serve(tmp_path / "data")
        await _read_until(proc, "HTTP edge")
        again = await _stop(proc)
        assert "shown this once" not in again and admin.group(1) not in again
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_serve_reports_auth_start_problems_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    http_port, grpc_port = free_ports(2)
    ports = ("--http-port", str(http_port), "--grpc-port", str(grpc_port))
    d = ("--data-dir", str(tmp_path / "data"))
    monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "short")
    assert main(["serve", *d, *ports]) == 2
    assert "GATEWAY_ADMIN_TOKEN must hold at least 16" in capsys.readouterr().err
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN")
    assert run(capsys, "list", *d)[0] == 0  # creates the store
    with sqlite3.connect(tmp_path / "data" / "gateway.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 7")
    assert main(["serve", *d, *ports]) == 1
    err = capsys.readouterr().err
    assert "cannot open the token store (sqlite)" in err and "Traceback" not in err
