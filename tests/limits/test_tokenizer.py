"""Usage counted with the upstream's own tokenizer (``options.tokenizer``) when the upstream
reports none: exact counts, not marked estimated; the gateway's estimate, marked so, when the
tokenizer cannot answer."""

from __future__ import annotations

import grpc
import pytest

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import GatewayFactory
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

MESSAGES = [pb.ChatMessage(role="user", content="What is deep learning?")]


def _model(mid: str, url: str, tokenizer: str | None) -> dict[str, object]:
    return {"id": mid, "task": "chat", "provider": "openai", "upstream_url": url,
            "upstream_model": "no-usage", "options": {"tokenizer": tokenizer}}


@pytest.mark.parametrize("stream", [False, True])
async def test_the_upstream_tokenizer_counts_what_the_upstream_did_not_report(
        upstream: FakeOpenAI, gateway_factory: GatewayFactory, stream: bool) -> None:
    gw = await gateway_factory({"auth": {"enabled": False}, "models": [
        _model("counted", upstream.base_url, "vllm"),
        _model("broken", upstream.base_url, "llama-cpp-python"),  # no /extras/tokenize here
        _model("estimated", upstream.base_url, None)]})
    async with grpc.aio.insecure_channel(gw.grpc_target) as channel:
        stub = pb_grpc.InferenceStub(channel)
        usages = {}
        for mid in ("counted", "broken", "estimated"):
            request = pb.ChatRequest(model=mid, messages=MESSAGES)
            if stream:
                chunks = [c async for c in stub.ChatStream(request, timeout=10)]
                usages[mid] = chunks[-1].usage
            else:
                usages[mid] = (await stub.Chat(request, timeout=10)).usage
    counted = usages["counted"]
    assert not counted.estimated
    assert counted.prompt_tokens == len(["What", "is", "deep", "learning?"]) + 2
    assert counted.completion_tokens == len(REPLY.split())
    assert counted.total_tokens == counted.prompt_tokens + counted.completion_tokens
    assert usages["broken"].estimated and usages["estimated"].estimated
    assert usages["broken"].completion_tokens > 0
