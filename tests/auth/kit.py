"""Helpers for the auth tests: gateways with auth on (stores in tmp_path), admin calls, metrics."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import REGISTRY

from gateway_common.defaults import MOCK_MODELS
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway

Metadata = tuple[tuple[str, str], ...]


def mock_models() -> list[dict[str, Any]]:
    return [{**m, "provider": "mock"} for m in MOCK_MODELS]


def auth_config(data_dir: Path | str, **auth: Any) -> dict[str, Any]:
    """Mock models with auth on and the store in ``data_dir``."""
    return {
        "auth": {"enabled": True, "admin_token_env": "IGW_TEST_ADMIN_UNSET", **auth},
        "storage": {"data_dir": str(data_dir)},
        "models": mock_models(),
    }


def bearer(secret: str) -> Metadata:
    return (("authorization", f"Bearer {secret}"),)


def random_secret() -> str:
    """A well-formed token secret that no store knows."""
    return "igw_" + secrets.token_urlsafe(32)


def chat(model: str = "mock-chat", text: str = "hi", end_user: str = "") -> pb.ChatRequest:
    return pb.ChatRequest(model=model, messages=[pb.ChatMessage(role="user", content=text)],
                          end_user=end_user)


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_auth_failures_total", {"reason": reason}) or 0.0


def reason_of(exc: grpc.aio.AioRpcError) -> str:
    return str(dict(exc.trailing_metadata() or ()).get("igw-reason", ""))


@dataclass
class AuthGateway:
    """A gateway with auth on, its admin credential and a token for every mock model."""

    gw: Gateway
    admin: str
    token: str
    channel: grpc.aio.Channel

    @property
    def inference(self) -> pb_grpc.InferenceAsyncStub:
        return pb_grpc.InferenceStub(self.channel)

    @property
    def models(self) -> pb_grpc.ModelsAsyncStub:
        return pb_grpc.ModelsStub(self.channel)

    @property
    def admin_stub(self) -> apb_grpc.AdminAsyncStub:
        return apb_grpc.AdminStub(self.channel)

    @property
    def admin_md(self) -> Metadata:
        return bearer(self.admin)

    async def create(self, *models: str, name: str = "test", expires_at: int = 0
                     ) -> tuple[str, str]:
        """(token id, secret) of a new token for ``models``."""
        resp = await self.admin_stub.CreateToken(
            apb.CreateTokenRequest(name=name, models=list(models), expires_at=expires_at),
            metadata=self.admin_md, timeout=5)
        return resp.token.id, resp.secret

    async def revoke(self, token_id: str) -> apb.Token:
        return await self.admin_stub.RevokeToken(apb.RevokeTokenRequest(id=token_id),
                                                 metadata=self.admin_md, timeout=5)
