"""Usage through the core when the upstream reports none (estimated: the prompt counted by the
gateway) and when it does (the upstream's numbers), for chat and completion, unary and streamed."""

from __future__ import annotations

import grpc
import pytest

from gateway_core.providers.openai_wire import prompt_tokens_of
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway
from tests.fakes.openai_upstream import REPLY

MESSAGES = [pb.ChatMessage(role="system", content="You answer briefly."),
            pb.ChatMessage(role="user", content="What is deep learning, in one sentence?")]
PROMPT = "Once upon a time, in a land of neural networks,"
WORDS = len(REPLY.split(" "))


@pytest.mark.parametrize("model", ["fake-nousage", "fake-chat"])
async def test_chat_usage(gateway: Gateway, model: str) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        req = pb.ChatRequest(model=model, messages=MESSAGES)
        unary = (await stub.Chat(req, timeout=5)).usage
        streamed = [c async for c in stub.ChatStream(req, timeout=5)][-1].usage
    if model == "fake-nousage":
        prompt = prompt_tokens_of(MESSAGES)
        assert streamed == pb.Usage(prompt_tokens=prompt, completion_tokens=WORDS,
                                    total_tokens=prompt + WORDS, estimated=True)
        assert unary.estimated and unary.prompt_tokens == prompt
        assert unary.total_tokens == prompt + unary.completion_tokens > prompt
    else:  # the fake's own numbers
        assert unary == streamed == pb.Usage(prompt_tokens=12, completion_tokens=WORDS,
                                             total_tokens=12 + WORDS)


@pytest.mark.parametrize("model", ["fake-nousage", "fake-chat"])
async def test_completion_usage(gateway: Gateway, model: str) -> None:
    async with grpc.aio.insecure_channel(gateway.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        req = pb.CompletionRequest(model=model, prompt=PROMPT)
        unary = (await stub.Complete(req, timeout=5)).usage
        streamed = [c async for c in stub.CompleteStream(req, timeout=5)][-1].usage
    if model == "fake-nousage":
        prompt = estimate_tokens(PROMPT)
        assert streamed == pb.Usage(prompt_tokens=prompt, completion_tokens=WORDS,
                                    total_tokens=prompt + WORDS, estimated=True)
        assert unary.estimated and unary.prompt_tokens == prompt
        assert unary.total_tokens == prompt + unary.completion_tokens > prompt
    else:
        assert unary == pb.Usage(prompt_tokens=5, completion_tokens=WORDS,
                                 total_tokens=5 + WORDS)
