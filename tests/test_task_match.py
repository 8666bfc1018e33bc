"""A model serves its ``task`` and the ``tasks`` its config lists; anything else is a 400
``task_mismatch`` naming what it serves. The TGI routes and the oicm ``inputs`` form are text
generation on the model itself, which a chat model serves."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import openai
import pytest
import yaml

from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import Gateway, GatewayFactory

CLI = str(Path(sys.executable).parent / "inference-gateway")


@pytest.fixture
async def gw(gateway_factory: GatewayFactory) -> Gateway:
    return await gateway_factory({"auth": {"enabled": False}, "tgi_model": "chat-only", "models": [
        {"id": "chat-only", "task": "chat", "provider": "mock"},
        {"id": "both", "task": "chat", "tasks": ["completion"], "provider": "mock"},
        {"id": "completion-only", "task": "completion", "provider": "mock"},
    ]})


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="unused", max_retries=0)


async def test_completion_on_a_chat_only_model_is_a_400_naming_its_task(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client(gw).completions.create(model="chat-only", prompt="Once upon")
    assert info.value.code == "task_mismatch"
    assert info.value.message.endswith("model 'chat-only' serves the task 'chat', not 'completion'")
    with pytest.raises(openai.BadRequestError) as info:
        await client(gw).chat.completions.create(
            model="completion-only", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "task_mismatch" and "serves the task 'completion'" in info.value.message


async def test_a_model_declaring_both_tasks_answers_both(gw: Gateway) -> None:
    c = client(gw)
    chat = await c.chat.completions.create(model="both",
                                           messages=[{"role": "user", "content": "ping"}])
    assert chat.choices[0].message.content == "This is a mock reply to: ping"
    done = await c.completions.create(model="both", prompt="Once upon", max_tokens=3)
    assert done.choices[0].text == "This is a"
    with pytest.raises(openai.BadRequestError) as info:
        await c.embeddings.create(model="both", input="x")
    assert info.value.message.endswith("model 'both' serves the tasks 'chat', 'completion', not "
                                       "'embedding'")


async def test_models_list_shows_the_served_tasks(gw: Gateway) -> None:
    by_id = {m.id: m.model_extra async for m in client(gw).models.list()}
    assert by_id["both"] == {"task": "chat", "tasks": ["chat", "completion"]}
    assert by_id["chat-only"] == {"task": "chat", "tasks": ["chat"]}
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        models = pb_grpc.ModelsStub(ch)
        got = await models.GetModel(pb.GetModelRequest(id="both"), timeout=5)
        assert list(got.tasks) == [pb.TASK_CHAT, pb.TASK_COMPLETION]
        listed = await models.ListModels(pb.ListModelsRequest(task=pb.TASK_COMPLETION), timeout=5)
        assert [m.id for m in listed.models] == ["both", "completion-only"]


async def _post(gw: Gateway, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(gw.http + path, json=body) as r:
        return r.status, await r.json()


async def test_generate_routes_use_a_chat_models_completion(gw: Gateway) -> None:
    status, body = await _post(gw, "/generate", {"inputs": "Once upon",
                                                 "parameters": {"max_new_tokens": 3}})
    assert status == 200 and body["generated_text"] == "This is a"
    status, body = await _post(gw, "/models/chat-only/proxy/v1/chat/completions",
                               {"inputs": "Once upon", "max_new_tokens": 3})
    assert status == 200 and body["choices"][0]["message"]["content"] == "This is a"
    # Only a chat model's: a model of another task is still a mismatch.
    status, body = await _post(gw, "/models/completion-only/proxy/v1/chat/completions",
                               {"messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and body["error"]["code"] == "task_mismatch"


async def test_grpc_generate_mark(gw: Gateway) -> None:
    req = pb.CompletionRequest(model="chat-only", prompt="Once upon")
    async with grpc.aio.insecure_channel(gw.grpc_target) as ch:
        stub = pb_grpc.InferenceStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Complete(req, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert dict(info.value.trailing_metadata() or ())["igw-reason"] == "task_mismatch"
        resp = await stub.Complete(req, timeout=5, metadata=[("igw-generate", "1")])
        assert resp.choices[0].text.startswith("This is a mock reply")


@pytest.mark.parametrize(("tasks", "expected"), [
    (["chat", "nope"], "models[0].tasks[1]: must be one of 'chat', 'completion'"),
    ("completion", "models[0].tasks: must be a list"),
])
async def test_check_config_names_a_bad_tasks_entry(tmp_path: Path, tasks: Any,
                                                    expected: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"models": [
        {"id": "a", "task": "chat", "tasks": tasks, "provider": "mock"}]}))
    done = await asyncio.to_thread(subprocess.run, [CLI, "check-config", str(path)],
                                   capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert expected in done.stderr, done.stderr
