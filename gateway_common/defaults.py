"""The embedded defaults: what ``inference-gateway serve`` runs with no config file.

One ``mock`` model per task, so that a new user can try every route at once.
"""

from __future__ import annotations

from typing import Any

from gateway_common.config import GatewayConfig, parse_config

MOCK_MODELS: list[dict[str, Any]] = [
    {"id": "mock-chat", "task": "chat", "aliases": ["chat"]},
    {"id": "mock-completion", "task": "completion", "aliases": ["completions"]},
    {"id": "mock-embedding", "task": "embedding", "aliases": ["embeddings"]},
    {"id": "mock-rerank", "task": "rerank"},
    {"id": "mock-classifier", "task": "classification"},
    {"id": "mock-transcription", "task": "transcription"},
    {"id": "mock-speech", "task": "speech"},
    {"id": "mock-image", "task": "image"},
    {"id": "mock-translation", "task": "translation"},
    {"id": "mock-predict", "task": "predict"},
]


def default_config_data() -> dict[str, Any]:
    return {
        "models": [{**m, "provider": "mock"} for m in MOCK_MODELS],
        "endpoints": {"mock": ["mock-chat", "mock-completion"]},
        "tgi_model": "mock-chat",
    }


def default_config() -> GatewayConfig:
    return parse_config(default_config_data())
