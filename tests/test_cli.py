"""The command line as a user runs it: check-config, and `serve` booted as a real process and
driven with the official openai SDK, then stopped gracefully with SIGTERM mid-stream."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml

from gateway_cli.cli import main
from tests.conftest import base_config, free_ports
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

CLI = str(Path(sys.executable).parent / "inference-gateway")


def write(tmp_path: Path, data: Any, name: str = "gateway.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_check_config_accepts_a_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, base_config("http://127.0.0.1:9/v1"))
    assert main(["check-config", path]) == 0
    assert "OK" in capsys.readouterr().out


def test_the_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "gateway.yaml"
    assert main(["check-config", str(example)]) == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"models": [{"id": "a", "taks": "chat", "provider": "mock"}]},
         "models[0].taks: unknown key"),
        ({"models": [{"id": "a", "task": "chatt", "provider": "mock"}]},
         "models[0].task: must be one of"),
        ({"models": [{"id": "a", "task": "chat", "provider": "nope"}]},
         "models[0].provider: unknown provider 'nope'"),
        ({"models": [{"id": "a", "task": "chat", "provider": "openai"}]},
         "models[0].upstream_url: is required"),
        ({"models": [{"id": "a", "task": "chat"}]}, "models[0].provider: is required"),
        ({"listen": {"http_port": "eighty"}}, "listen.http_port: must be an integer"),
        ({"timeouts": {"default_seconds": -5}}, "timeouts.default_seconds: must not be negative"),
        ({"models": [{"id": "a", "task": "chat", "provider": "mock"},
                     {"id": "a", "task": "chat", "provider": "mock"}]}, "already used"),
        ({"endpoints": {"e1": ["ghost"]}}, "endpoints.e1[0]: no model named 'ghost'"),
        ({"models": [{"id": "a", "task": "chat", "provider": "mock",
                      "options": {"token_delay_seconds": "slow"}}]},
         "models[0].options.token_delay_seconds: must be a number"),
        ("models: [unclosed", "not valid YAML at line"),
        (["a", "list"], "must be a mapping"),
    ],
)
def test_check_config_names_the_bad_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: Any, expected: str
) -> None:
    path = write(tmp_path, data)
    assert main(["check-config", path]) == 2
    err = capsys.readouterr().err
    assert expected in err, err


def test_missing_file_and_bad_serve_config_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    bad = write(tmp_path, {"models": [{"id": "a", "task": "chat", "provider": "nope"}]})
    assert main(["serve", "--config", bad]) == 2
    assert "unknown provider" in capsys.readouterr().err


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            if proc.returncode is not None:
                raise AssertionError(f"serve exited with {proc.returncode}")
            try:
                async with s.get(f"{url}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)  # polling the health route, not guessing readiness
    raise AssertionError("the gateway did not become healthy")


async def test_serve_end_to_end_with_the_openai_sdk(tmp_path: Path) -> None:
    upstream = await FakeOpenAI(token_delay=0.05).start()
    http_port, grpc_port = free_ports(2)
    path = write(tmp_path, base_config(upstream.base_url))
    proc = await asyncio.create_subprocess_exec(
        CLI, "serve", "--config", path, "--http-port", str(http_port), "--grpc-port",
        str(grpc_port), "--data-dir", str(tmp_path / "data"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        await _wait_healthy(base, proc)
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        resp = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "hello"}])
        assert resp.choices[0].message.content == REPLY

        def sync_calls() -> str:
            c = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
            return "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
                model="mock-chat", messages=[{"role": "user", "content": "ping"}], stream=True)
                if ch.choices)

        assert await asyncio.to_thread(sync_calls) == "This is a mock reply to: ping"

        # Graceful shutdown: a stream in flight when SIGTERM arrives still completes.
        stream = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "hello"}], stream=True)
        text = ""
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and not text:
                proc.send_signal(signal.SIGTERM)
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        assert text == REPLY
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        out = (await proc.stdout.read()).decode()  # type: ignore[union-attr]
        assert f"127.0.0.1:{http_port}" in out
        with pytest.raises(openai.APIConnectionError):
            await client.models.list()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await upstream.stop()


async def test_core_and_edge_as_separate_processes(tmp_path: Path) -> None:
    upstream = await FakeOpenAI().start()
    http_port, grpc_port, metrics_port = free_ports(3)
    path = write(tmp_path, base_config(upstream.base_url))
    common = ["--config", path, "--data-dir", str(tmp_path / "data")]
    core = await asyncio.create_subprocess_exec(
        CLI, "core", *common, "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    edge = await asyncio.create_subprocess_exec(
        CLI, "edge", *common, "--http-port", str(http_port), "--core", f"127.0.0.1:{grpc_port}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http_port}"
    try:
        await _wait_healthy(base, edge)
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)
        resp = await client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": "hello"}])
        assert resp.choices[0].message.content == REPLY
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{metrics_port}/metrics") as r:
                core_metrics = await r.text()
            async with s.get(f"{base}/metrics") as r:
                edge_metrics = await r.text()
        assert 'gateway_grpc_requests_total{code="OK",method="Chat",model="fake-chat"}' in \
            core_metrics
        assert 'model="fake-chat"' in edge_metrics and "gateway_requests_total" in edge_metrics
        for proc in (edge, core):
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        for proc in (edge, core):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await upstream.stop()


@pytest.mark.parametrize("busy", ["http", "grpc"])
async def test_port_in_use_is_one_line_and_exit_1(tmp_path: Path, busy: str) -> None:
    import socket

    http_port, grpc_port = free_ports(2)
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", http_port if busy == "http" else grpc_port))
    blocker.listen()
    try:
        proc = await asyncio.create_subprocess_exec(
            CLI, "serve", "--config", write(tmp_path, base_config("http://127.0.0.1:9/v1")),
            "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--data-dir", str(tmp_path / "data"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        blocker.close()
    assert proc.returncode == 1
    text = err.decode()
    assert "Traceback" not in text
    assert "cannot start" in text and str(http_port if busy == "http" else grpc_port) in text
