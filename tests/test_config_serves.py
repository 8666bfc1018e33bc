"""Every config that ``check-config`` accepts serves requests.

A config is generated for each provider, task and option set, in each way of giving the upstream a
credential; each is checked as ``check-config`` does, started, and sent one request through the
edge. Conflicting credentials (``user:pass@`` in the URL and ``api_key_env``) are refused by
``check-config`` with the exact key, never at request time.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway_common.config import ConfigError, GatewayConfig, parse_config
from gateway_core.providers.mock_media import tone_wav
from gateway_core.registry import validate_providers
from tests.conftest import start_gateway
from tests.fakes.model_servers import FakeJsonModel, FakeMLflow, FakeTEI, FakeTGI
from tests.fakes.openai_media import FakeOpenAIMedia
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [{"role": "user", "content": "hi"}]
TTS_FIELDS = [{"name": "prompt", "type": "string", "required": True}]
SIGNATURE = {"inputs": [{"type": "double", "name": "age"}],
             "outputs": [{"type": "double", "name": "risk"}]}


@dataclass(frozen=True)
class Case:
    """A model (provider, task, options, where its upstream is) and one request for it."""

    name: str
    provider: str
    task: str
    upstream: str  # the fake server, and the path under its base URL
    options: dict[str, Any]
    path: str  # "{m}" is the model id
    body: Any = None
    upstream_model: str | None = None


def openai(task: str, path: str, body: Any, server: str = "media",
           **options: Any) -> list[Case]:
    return [Case(f"openai-{task}-{i}", "openai", task, server, opts, path, body, "llama")
            for i, opts in enumerate([{}, options] if options else [{}])]


CASES: list[Case] = [
    *openai("chat", "/v1/chat/completions", {"messages": MESSAGES}, "openai",
            stream_usage=False),
    *openai("completion", "/v1/completions", {"prompt": "hi"}, "openai"),
    *openai("embedding", "/v1/embeddings", {"input": "hi"}, embedding_encoding="float"),
    *openai("speech", "/v1/audio/speech", {"input": "hi", "voice": "alloy"}),
    *openai("image", "/v1/images/generations", {"prompt": "a dot"},
            image_response_format=None),
    *openai("transcription", "/v1/audio/transcriptions", None),
    Case("tei-embed", "tei", "embedding", "tei", {}, "/v1/embeddings", {"input": "hi"}),
    Case("tei-embed-opts", "tei", "embedding", "tei", {"normalize": False, "truncate": True},
         "/v1/embeddings", {"input": "hi"}),
    Case("tei-rerank", "tei", "rerank", "tei", {}, "/v1/rerank",
         {"query": "q", "documents": ["a", "b"]}),
    Case("tei-classify", "tei", "classification", "tei", {},
         "/models/{m}/proxy/v1/classify", {"inputs": "hi"}),
    Case("tgi-chat", "tgi", "chat", "tgi", {}, "/v1/chat/completions", {"messages": MESSAGES}),
    Case("tgi-chat-template", "tgi", "chat", "tgi",
         {"chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
         "/v1/chat/completions", {"messages": MESSAGES}),
    Case("tgi-completion", "tgi", "completion", "tgi", {}, "/v1/completions", {"prompt": "hi"}),
    Case("mlflow-free", "mlflow", "predict", "mlflow", {}, "/models/{m}/proxy/v1/predict",
         [[1.0, 2.0]]),
    Case("mlflow-signature", "mlflow", "predict", "mlflow", {"signature": SIGNATURE},
         "/models/{m}/proxy/v1/predict", {"dataframe_split": {"columns": ["age"],
                                                              "data": [[1.0]]}}),
    Case("mlflow-signature-url", "mlflow", "predict", "mlflow",
         {"signature_url": "{base}/artifacts/MLmodel"}, "/models/{m}/proxy/v1/predict",
         [[0.0] * 10]),
    Case("http-tts-base64", "http", "speech", "json/tts",
         {"fields": TTS_FIELDS, "result": "base64", "result_path": "audio"},
         "/models/{m}/proxy/v1/generate-speech", {"prompt": "hi"}),
    Case("http-tts-binary", "http", "speech", "json/tts-raw",
         {"fields": TTS_FIELDS, "result": "binary"},
         "/models/{m}/proxy/v1/generate-speech", {"prompt": "hi"}),
    Case("http-translate", "http", "translation", "json/translate",
         {"fields": [{"name": "text", "required": True}, {"name": "tgt_lang"}],
          "target_language_field": "tgt_lang", "static": {"tgt_lang": "fr"},
          "result_path": "0.translation_text"},
         "/models/{m}/proxy/v1/translate", {"text": "hi"}),
    Case("http-image", "http", "image", "json/image",
         {"fields": [{"name": "prompt", "required": True}], "result": "base64",
          "result_path": "images.0"},
         "/models/{m}/proxy/v1/generate-image", {"prompt": "hi"}),
    *(Case(f"mock-{task}", "mock", task, "", {}, path, body) for task, path, body in [
        ("chat", "/v1/chat/completions", {"messages": MESSAGES}),
        ("embedding", "/v1/embeddings", {"input": "hi"}),
        ("translation", "/models/{m}/proxy/v1/translate", {"text": "hi"}),
    ]),
]

# How the upstream's credential is given: (user:pass@ in the URL, api_key_env).
CREDENTIALS = {"none": (False, None), "env": (False, "IGW_TEST_UPSTREAM_KEY"),
               "env-unset": (False, "IGW_TEST_UNSET_KEY"), "url": (True, None)}


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, str]]:
    fakes: dict[str, Any] = {"openai": await FakeOpenAI().start(),
                             "media": await FakeOpenAIMedia().start(),
                             "tei": await FakeTEI().start(), "tgi": await FakeTGI().start(),
                             "mlflow": await FakeMLflow().start(),
                             "json": await FakeJsonModel().start()}
    yield {name: fake.base_url for name, fake in fakes.items()}
    for fake in fakes.values():
        await fake.stop()


def model(case: Case, servers: dict[str, str], creds: str) -> dict[str, Any]:
    in_url, env = CREDENTIALS[creds]
    data: dict[str, Any] = {"id": f"{case.name}-{creds}", "task": case.task,
                            "provider": case.provider}
    if case.upstream:
        server, _, path = case.upstream.partition("/")
        base = servers[server]
        url = f"{base}/{path}" if path else base
        data["upstream_url"] = url.replace("http://", "http://gw:s3cret@") if in_url else url
        data["options"] = {k: v.replace("{base}", base) if isinstance(v, str) else v
                           for k, v in case.options.items()}
    else:
        data["options"] = case.options
    if env:
        data["api_key_env"] = env
    if case.upstream_model:
        data["upstream_model"] = case.upstream_model
    return data


def checked(data: dict[str, Any]) -> GatewayConfig:
    """What ``check-config`` does."""
    config = parse_config(data)
    validate_providers(config)
    return config


async def send(http: str, case: Case, model_id: str) -> tuple[int, str]:
    url = http + case.path.replace("{m}", model_id)
    async with aiohttp.ClientSession() as s:
        if case.task == "transcription":
            form = aiohttp.FormData()
            form.add_field("model", model_id)
            form.add_field("file", tone_wav("hi"), filename="a.wav", content_type="audio/wav")
            async with s.post(url, data=form) as r:
                return r.status, (await r.read()).decode(errors="replace")
        body = case.body
        if isinstance(body, dict) and "{m}" not in case.path:
            body = {"model": model_id, **body}
        async with s.post(url, json=body) as r:
            return r.status, (await r.read()).decode(errors="replace")


def configs(servers: dict[str, str]) -> list[tuple[Case, dict[str, Any]]]:
    return [(case, model(case, servers, creds))
            for case, creds in itertools.product(CASES, CREDENTIALS)
            if creds == "none" or case.provider != "mock"]


async def test_every_generated_config_is_accepted_and_serves(
        servers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IGW_TEST_UPSTREAM_KEY", "sk-upstream")
    monkeypatch.delenv("IGW_TEST_UNSET_KEY", raising=False)
    generated = configs(servers)
    assert len(generated) >= 60
    for _, data in generated:  # each one alone, as check-config sees it
        checked({"auth": {"enabled": False}, "models": [data]})
    # Served together (one gateway; each model is its own config's only model otherwise).
    gw = await start_gateway(checked({"auth": {"enabled": False},
                                      "models": [d for _, d in generated]}))
    try:
        failed = []
        for case, data in generated:
            status, text = await send(gw.http, case, data["id"])
            if status != 200:
                failed.append((data["id"], status, text[:200]))
        assert not failed
    finally:
        await gw.stop()


Refusal = Callable[[dict[str, Any]], dict[str, Any]]


@pytest.mark.parametrize(("change", "reason"), [
    (lambda m: {**m, "upstream_url": "http://u:p@h:1/v1", "api_key_env": "K"},
     "api_key_env is set too"),
    (lambda m: {**m, "upstream_url": "ftp://h/v1"}, "http:// or https://"),
    (lambda m: {**m, "upstream_url": "http:///v1"}, "http:// or https://"),
    (lambda m: {**m, "upstream_url": "http://h:99999/v1"}, "invalid port"),
])
def test_check_config_refuses_a_config_that_could_not_serve(change: Refusal,
                                                            reason: str) -> None:
    base = {"id": "m", "task": "chat", "provider": "openai", "upstream_url": "http://h/v1"}
    with pytest.raises(ConfigError) as err:
        checked({"models": [change(base)]})
    assert err.value.path == "models[0].upstream_url" and reason in err.value.reason
    assert "p@" not in str(err.value)


def test_an_answer_bound_past_the_memory_budget_is_refused() -> None:
    model = {"id": "m", "task": "chat", "provider": "openai", "upstream_url": "http://h/v1",
             "max_response_bytes": 100 << 20}
    with pytest.raises(ConfigError) as err:
        checked({"models": [model]})
    assert err.value.path == "models[0].max_response_bytes"
    checked({"models": [model], "limits": {"max_buffered_bytes": 600 << 20}})
