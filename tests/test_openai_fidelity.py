"""Chat and completions pass through the typed core losslessly: recorded answers and streams of
real servers (``tests/fixtures/openai_corpus/``) replayed by a fake upstream reach the client field
by field, the upstream receives what the client sent, and the official SDK parses every case.

What may differ is what the gateway owns (docs/ARCHITECTURE.md, "Nothing unknown is lost"):
``id``, ``created``, ``system_fingerprint``, ``model`` (the caller's id), ``object``; in requests
``model`` and ``stream_options``. A null field and an absent one are the same, as an empty
``tool_calls`` list and none are; ``stop`` is sent as a list, an ``image_url`` as an object.
Streams are compared as OpenAI's clients accumulate them (text joined per choice, tool-call
fragments joined per ``index``, log-probability entries appended, other fields last one wins),
since the gateway may merge events that arrived together.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai._models import construct_type
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.conftest import Gateway, GatewayFactory
from tests.fakes.corpus_upstream import CorpusUpstream, load_cases

CASES = load_cases()
OWNED = frozenset({"id", "created", "system_fingerprint", "model", "object"})


def _clean(value: Any) -> Any:
    """Nulls and empty tool_calls dropped, recursively; whole floats as ints (JSON numbers)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if v is not None and not (k == "tool_calls" and v == [])}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _request_view(body: dict[str, Any]) -> Any:
    out = {k: v for k, v in body.items() if k not in ("model", "stream_options")}
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    for m in out.get("messages") or ():
        for part in m.get("content") if isinstance(m.get("content"), list) else ():
            if isinstance(part.get("image_url"), str):
                part["image_url"] = {"url": part["image_url"]}
    return _clean(out)


def _answer_view(data: dict[str, Any]) -> Any:
    return _clean({k: v for k, v in data.items() if k not in OWNED})


def _join(target: dict[str, Any], key: str, piece: Any) -> None:
    target[key] = target.get(key, "") + piece


def accumulate(chunks: list[dict[str, Any]], chat: bool) -> Any:
    """A stream as OpenAI's clients accumulate it (see the module docstring)."""
    top: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            if key not in OWNED and key != "choices" and value is not None:
                top[key] = value
        for c in chunk.get("choices") or ():
            acc = choices.setdefault(c.get("index", 0), {"tool_calls": {}, "logprobs": {}})
            for key, value in c.items():
                if value is None or key in ("index", "delta", "logprobs", "text"):
                    continue
                acc[key] = value
            if not chat:
                _join(acc, "text", c.get("text") or "")
            lp = c.get("logprobs")
            if lp:
                for key, value in lp.items():
                    if isinstance(value, list):
                        acc["logprobs"].setdefault(key, []).extend(value)
            delta = c.get("delta") or {}
            for key, value in delta.items():
                if value is None or key == "role":
                    continue
                if key in ("content", "reasoning_content", "reasoning", "refusal"):
                    _join(acc, key, value)
                elif key == "tool_calls":
                    for frag in value:
                        call = acc["tool_calls"].setdefault(frag.get("index", 0), {})
                        for k, v in frag.items():
                            if k == "function":
                                fn = call.setdefault("function", {})
                                for fk, fv in (v or {}).items():
                                    if fk == "arguments":
                                        _join(fn, "arguments", fv or "")
                                    elif fv is not None:
                                        fn[fk] = fv
                            elif k != "index" and v is not None:
                                call[k] = v
                else:
                    acc[key] = value
    for acc in choices.values():
        acc["tool_calls"] = [acc["tool_calls"][i] for i in sorted(acc["tool_calls"])]
        for key in ("content", "text"):  # an empty text and none are the same to a client
            if acc.get(key) == "":
                del acc[key]
    return _clean({"top": top, "choices": choices})


@pytest.fixture(params=[False, True], ids=["event-per-write", "events-together"])
async def corpus(request: pytest.FixtureRequest) -> AsyncIterator[CorpusUpstream]:
    fake = await CorpusUpstream(CASES, together=request.param).start()
    yield fake
    await fake.stop()


async def _gateway(factory: GatewayFactory, corpus: CorpusUpstream, *,
                   via_stream: bool = False) -> Gateway:
    """Models named after the cases. Unary requests go to the upstream as unary requests (the
    wire under test) unless ``via_stream``."""
    return await factory({"auth": {"enabled": False}, "models": [
        {"id": f"gw-{name}", "task": "chat", "tasks": ["chat", "completion"], "provider": "openai",
         "upstream_url": corpus.base_url, "options": {"unary_via_stream": via_stream},
         "upstream_model": name} for name in CASES]})


async def _sse(resp: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    chunks = []
    async for line in resp.content:
        if line.startswith(b"data: ") and line.strip() != b"data: [DONE]":
            chunks.append(orjson.loads(line[6:]))
    return chunks


@pytest.mark.parametrize("name", sorted(CASES))
async def test_case_passes_through_field_by_field(
        name: str, corpus: CorpusUpstream, gateway_factory: GatewayFactory) -> None:
    case = CASES[name]
    gw = await _gateway(gateway_factory, corpus)
    chat = case["endpoint"] == "chat"
    body = {**case["request"], "model": f"gw-{name}"}
    path = "/v1/chat/completions" if chat else "/v1/completions"
    async with aiohttp.ClientSession() as session, session.post(gw.http + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        got: Any = await _sse(resp) if "stream" in case else await resp.json()
    assert _request_view(corpus.received[-1]) == _request_view(case["request"])
    if "stream" not in case:
        sent = case["response"]
        assert got["model"] == f"gw-{name}"
        assert _answer_view(got) == _answer_view(sent)
        return
    if not (case["request"].get("stream_options") or {}).get("include_usage"):
        sent_chunks = [c for c in case["stream"] if c.get("choices")]  # no usage chunk asked
        for c in got:
            assert c.get("usage") is None
    else:
        sent_chunks = case["stream"]
    assert all(c["model"] == f"gw-{name}" for c in got)
    assert accumulate(got, chat) == accumulate(sent_chunks, chat)


def _as_accumulated(answer: dict[str, Any], chat: bool, usage: bool) -> Any:
    """A unary answer in the form ``accumulate`` gives a stream."""
    top = {k: v for k, v in answer.items() if k not in OWNED and k != "choices"
           and (usage or k != "usage")}
    choices: dict[int, dict[str, Any]] = {}
    for c in answer["choices"]:
        acc = {k: v for k, v in c.items() if k not in ("index", "message", "logprobs")}
        acc["logprobs"] = {k: v for k, v in (c.get("logprobs") or {}).items()
                           if isinstance(v, list)}
        if chat:
            message = {k: v for k, v in (c.get("message") or {}).items() if k != "role"}
            acc.update(message)
        for key in ("content", "text"):
            if acc.get(key) == "":
                del acc[key]
        choices[c["index"]] = acc
    return _clean({"top": top, "choices": choices})


STREAM_CASES = sorted(name for name, case in CASES.items() if "stream" in case)


@pytest.mark.parametrize("name", STREAM_CASES)
async def test_unary_answer_assembled_from_the_stream(
        name: str, corpus: CorpusUpstream, gateway_factory: GatewayFactory) -> None:
    """A non-streaming request is streamed from the upstream (``unary_via_stream``, the default)
    and its answer holds everything the stream held, as a client accumulates it."""
    case = CASES[name]
    gw = await _gateway(gateway_factory, corpus, via_stream=True)
    chat = case["endpoint"] == "chat"
    body = {k: v for k, v in case["request"].items() if k not in ("stream", "stream_options")}
    body["model"] = f"gw-{name}"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    async with aiohttp.ClientSession() as session, session.post(gw.http + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        got = await resp.json()
    sent = corpus.received[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert got["object"] == ("chat.completion" if chat else "text_completion")
    assert got["model"] == f"gw-{name}"
    assert got["usage"]["total_tokens"] > 0  # counted by the gateway when the stream had none
    usage = bool((case["request"].get("stream_options") or {}).get("include_usage"))
    assert _as_accumulated(got, chat, usage) == accumulate(case["stream"], chat)


def _sdk(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http}/v1", api_key="unused", max_retries=0)


def _dump(obj: Any) -> Any:
    return _clean({k: v for k, v in obj.model_dump(exclude_none=True).items() if k not in OWNED})


@pytest.mark.parametrize("name", sorted(CASES))
async def test_sdk_parses_every_case(name: str, gateway_factory: GatewayFactory) -> None:
    """The official SDK reads the gateway's answer as it reads the upstream's own."""
    case = CASES[name]
    corpus = await CorpusUpstream(CASES).start()
    try:
        client = _sdk(await _gateway(gateway_factory, corpus))
        chat = case["endpoint"] == "chat"
        api: Any = client.chat.completions if chat else client.completions
        known = inspect.signature(api.create).parameters
        request = {k: v for k, v in case["request"].items() if k in known}
        request["model"] = f"gw-{name}"
        request["extra_body"] = {k: v for k, v in case["request"].items() if k not in known}
        kind: Any = (ChatCompletionChunk if chat else Completion) if "stream" in case else (
            ChatCompletion if chat else Completion)
        if "stream" not in case:
            got = await api.create(**request)
            assert _dump(got) == _dump(construct_type(type_=kind, value=case["response"]))
            if chat and case["response"]["choices"][0]["message"].get("tool_calls"):
                sent_call = case["response"]["choices"][0]["message"]["tool_calls"][0]
                assert got.choices[0].message.tool_calls[0].function.arguments == \
                    sent_call["function"]["arguments"]
            if chat and (case["response"]["choices"][0].get("logprobs") or {}).get("content"):
                top = case["response"]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
                assert [t.token for t in got.choices[0].logprobs.content[0].top_logprobs] == \
                    [t["token"] for t in top]
            return
        chunks = [c async for c in await api.create(**request)]
        sent: list[Any] = [construct_type(type_=kind, value=c) for c in case["stream"]]
        if not (case["request"].get("stream_options") or {}).get("include_usage"):
            sent = [c for c in sent if c.choices]
        as_dicts = [c.model_dump(exclude_none=True) for c in chunks]
        assert accumulate(as_dicts, chat) == accumulate(
            [c.model_dump(exclude_none=True) for c in sent], chat)
    finally:
        await corpus.stop()
