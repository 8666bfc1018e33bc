"""The console's code never rots: every snippet of every task, rendered as the console renders
it, runs against a running gateway on the mock models (Python with ``requests`` and the ``openai``
SDK, and curl) and succeeds."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from http_edge.console.snippets import PLACEHOLDER, TASKS, snippets
from tests.auth.conftest import open_auth_gateway
from tests.auth.kit import AuthGateway, auth_config
from tests.conftest import GatewayFactory

MODEL_OF = {"chat": "mock-chat", "completion": "mock-completion", "embedding": "mock-embedding",
            "rerank": "mock-rerank", "classification": "mock-classifier",
            "transcription": "mock-transcription", "speech": "mock-speech",
            "image": "mock-image", "translation": "mock-translation", "predict": "mock-predict"}


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)


@pytest.fixture
async def gw(gateway_factory: GatewayFactory, tmp_path: Path,
             core_transport: str) -> AsyncIterator[AuthGateway]:
    if core_transport != "local":
        pytest.skip("one transport is enough to run the snippets")
    gateway = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    yield gateway
    await gateway.channel.close()


def _audio(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * 8000)


def test_every_task_has_a_requests_snippet_and_curl_and_the_placeholder() -> None:
    for task in TASKS:
        shown = snippets(task, "http://gw.example", MODEL_OF[task])
        titles = [s.title for s in shown]
        assert titles[0] == "Python (requests)" and titles[-1] == "curl"
        assert all(PLACEHOLDER in s.code and "http://gw.example" in s.code for s in shown)
        assert all(MODEL_OF[task] in s.code for s in shown)


@pytest.mark.parametrize("task", TASKS)
async def test_every_snippet_runs(gw: AuthGateway, task: str, tmp_path: Path) -> None:
    _audio(tmp_path / "audio.wav")
    for snippet in snippets(task, gw.gw.http, MODEL_OF[task], gw.token):
        if snippet.language == "python":
            args = [sys.executable, "-c", snippet.code]
        else:
            if shutil.which("curl") is None:
                pytest.skip("curl is not installed")
            args = ["bash", "-euo", "pipefail", "-c", snippet.code]
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "NO_PROXY": "*"})
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, (snippet.title, snippet.code, err.decode()[-2000:])
        assert out.strip() or (tmp_path / "speech.out").exists(), (snippet.title,
                                                                   err.decode()[-500:])
