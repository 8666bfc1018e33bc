"""Fault-injecting replicas and helpers for the traffic tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from tests.conftest import Gateway
from tests.fakes.faulty_upstream import FaultyUpstream

Replicas = Callable[..., Awaitable[list[FaultyUpstream]]]


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    """``await replicas("ok", "503")``: one started replica per fault, named a, b, c..."""
    started: list[FaultyUpstream] = []

    async def make(*faults: str, delay: float = 5.0) -> list[FaultyUpstream]:
        out = []
        for fault in faults:
            fake = await FaultyUpstream(chr(ord("a") + len(started)), fault, delay=delay).start()
            started.append(fake)
            out.append(fake)
        return out

    yield make
    for fake in started:
        await fake.stop()


def model(model_id: str, *urls: str, **settings: Any) -> dict[str, Any]:
    """A chat model over a pool of ``urls`` (round robin unless said: the order is the test's)."""
    return {"id": model_id, "task": "chat", "provider": "openai", "balance": "round_robin",
            "upstreams": [{"url": u} for u in urls], **settings}


def config(*models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"auth": {"enabled": False}, "models": list(models), **extra}


async def chat(gw: Gateway, model_id: str, *, stream: bool = False, content: str = "hi",
               headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(
            f"{gw.http}/v1/chat/completions", headers=headers or {},
            json={"model": model_id, "stream": stream,
                  "messages": [{"role": "user", "content": content}]}) as resp:
        return resp.status, dict(resp.headers), await resp.read()
