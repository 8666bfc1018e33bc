"""Fixtures for the auth tests: a gateway with auth on, its store in the test's tmp_path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.auth.kit import AuthGateway, auth_config
from tests.conftest import GatewayFactory


@pytest.fixture(autouse=True)
def _no_admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)


async def open_auth_gateway(factory: GatewayFactory, data: dict[str, object]) -> AuthGateway:
    """Start a gateway on a fresh store; its bootstrap gives the admin and a token."""
    gw = await factory(data)
    assert gw.core.auth is not None
    boot = gw.core.auth.bootstrap
    assert boot.admin_secret is not None and boot.token_secret is not None
    return AuthGateway(gw, boot.admin_secret, boot.token_secret,
                       grpc.aio.insecure_channel(gw.grpc_target))


@pytest.fixture
async def auth_gw(gateway_factory: GatewayFactory, tmp_path: Path) -> AsyncIterator[AuthGateway]:
    """Mock models behind a gateway with auth on (SQLite store in tmp_path)."""
    gw = await open_auth_gateway(gateway_factory, auth_config(tmp_path / "data"))
    yield gw
    await gw.channel.close()
