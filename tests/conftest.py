"""Shared fixtures: a fake upstream and the real core and edge, all on loopback ports."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway_common import access_log
from gateway_common.config import GatewayConfig, parse_config
from gateway_core.server import CoreHandle, start_core
from http_edge.app import EdgeHandle, start_edge
from tests.fakes.openai_media import FakeOpenAIMedia
from tests.fakes.openai_upstream import FakeOpenAI


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports with nothing listening, for servers a test starts itself.

    Drawn below Linux's ephemeral range (32768+), so that no outgoing connection can take one
    between the draw and the server's bind; all are held open until all are found.
    """
    held: list[socket.socket] = []
    try:
        while len(held) < n:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", random.randint(20000, 32000)))
            except OSError:
                s.close()
                continue
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def closed_port() -> int:
    """A loopback port with nothing listening on it (connection refused)."""
    return free_ports(1)[0]


def fake_models(upstream_url: str) -> list[dict[str, Any]]:
    """Gateway models routed to the fake upstream, one per behaviour it has."""
    behaviours = {
        "fake-chat": "llama",
        "fake-nousage": "no-usage",
        "fake-slow": "slow",
        "fake-slowstream": "slow-stream",
        "fake-500": "error-500",
        "fake-garbage": "garbage",
        "fake-badshape": "bad-shape",
        "fake-400": "error-400",
        "fake-429": "error-429",
        "fake-miderror": "mid-error",
        "fake-endless": "endless",
    }
    # The fake answers both, as vLLM does; the mock models serve their task only.
    models: list[dict[str, Any]] = [
        {"id": gid, "task": "chat", "tasks": ["chat", "completion"], "provider": "openai",
         "upstream_url": upstream_url, "upstream_model": up}
        for gid, up in behaviours.items()
    ]
    # The unary wire too: these answer non-streaming requests as the upstream answered them.
    models.append({"id": "fake-unary", "task": "chat", "tasks": ["chat", "completion"],
                   "provider": "openai", "upstream_url": upstream_url, "upstream_model": "llama",
                   "options": {"unary_via_stream": False}})
    for m in models:
        if m["id"] in ("fake-garbage", "fake-badshape"):
            m["options"] = {"unary_via_stream": False}
    models.append({"id": "fake-refused", "task": "chat", "provider": "openai",
                   "upstream_url": f"http://127.0.0.1:{closed_port()}/v1"})
    models.append({"id": "mock-chat", "task": "chat", "provider": "mock"})
    models.append({"id": "mock-embedding", "task": "embedding", "provider": "mock"})
    return models


def base_config(upstream_url: str, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "auth": {"enabled": False},
        "models": fake_models(upstream_url),
    }
    data.update(overrides)
    return data


@dataclass
class Gateway:
    """A running core and edge."""

    core: CoreHandle
    edge: EdgeHandle
    config: GatewayConfig

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.edge.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.core.port}"

    async def stop(self) -> None:
        await self.edge.stop()
        await self.core.stop(0)


async def start_gateway(config: GatewayConfig, transport: str = "local",
                        config_path: str | None = None) -> Gateway:
    """Core and edge in this process, the edge calling the core over ``transport``: "local"
    (the core in process, as ``serve`` does) or "grpc" (its port, as ``edge`` does)."""
    core = await start_core(config, host="127.0.0.1", port=0, config_path=config_path)
    edge = await start_edge(config, host="127.0.0.1", port=0,
                            core_address=f"127.0.0.1:{core.port}",
                            core=core.in_process if transport == "local" else None,
                            buffers=core.buffers)
    return Gateway(core, edge, config)


@pytest.fixture(autouse=True)
def _access_log_to_the_logger() -> Iterator[None]:
    """Every test sees the access log on the logger ``gateway.access`` (caplog), even after a
    test ran the CLI in this process (which points it at stdout)."""
    access_log.reset()
    yield
    access_log.reset()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    fake = await FakeOpenAI().start()
    yield fake
    await fake.stop()


@pytest.fixture
async def media() -> AsyncIterator[FakeOpenAIMedia]:
    """The fake OpenAI media server (embeddings, audio, images)."""
    fake = await FakeOpenAIMedia().start()
    yield fake
    await fake.stop()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture(params=["local", "grpc"])
def core_transport(request: pytest.FixtureRequest) -> str:
    """Every test through the edge runs twice: the edge calling the core in process (``serve``)
    and over the core's gRPC port (``edge`` apart from ``core``)."""
    transport: str = request.param
    return transport


@pytest.fixture
async def gateway_factory(core_transport: str) -> AsyncIterator[GatewayFactory]:
    """Start gateways from config data (a dict as in YAML); all are stopped after the test."""
    started: list[Gateway] = []

    async def factory(data: dict[str, Any]) -> Gateway:
        gw = await start_gateway(parse_config(data), core_transport)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        await gw.stop()


@pytest.fixture
async def gateway(upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> Gateway:
    """The gateway in front of the fake upstream, with every fake behaviour as a model."""
    return await gateway_factory(base_config(upstream.base_url))
