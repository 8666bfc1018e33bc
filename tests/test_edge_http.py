"""The edge over raw HTTP: bad input, SSE framing, request ids, disconnects, metrics, health."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Gateway, GatewayFactory, base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

CHAT = {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}


async def test_non_ascii_headers_are_not_a_500(gateway: Gateway) -> None:
    """Header values that are not printable ASCII (gRPC metadata's alphabet) do not break the call
    to the core: a request id is replaced, a credential is passed on escaped (auth is off here)."""
    for body in (CHAT, {**CHAT, "stream": True}):
        async with aiohttp.ClientSession() as s, s.post(
            f"{gateway.http}/v1/chat/completions", json=body,
            headers={"X-Request-Id": "r\xe9q", "Authorization": "Bearer \xe9\t",
                     "x-api-key": "\xe9"},
        ) as r:
            await r.read()
            assert r.status == 200
            assert r.headers["X-Request-Id"] != "r\xe9q" and r.headers["X-Request-Id"].isascii()


async def post(gw: Gateway, path: str, body: Any = None, *, data: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as s, s.post(
        f"{gw.http}{path}", json=body if data is None else None, data=data, headers=headers
    ) as r:
        payload = await r.json(content_type=None)
        return r.status, payload, r


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"model": "fake-chat", "messages": "hi"}, "messages", "must be an array"),
        ({"model": "fake-chat"}, "messages", "'messages' is required"),
        ({"model": "fake-chat", "messages": []}, "messages", "at least one"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model", "'model' is required"),
        ({**CHAT, "temperature": "hot"}, "temperature", "'temperature' must be a number"),
        ({**CHAT, "temperature": 7}, "temperature", "between 0 and 2"),
        ({**CHAT, "max_tokens": 1.5}, "max_tokens", "must be an integer"),
        ({**CHAT, "stream": "yes"}, "stream", "must be a boolean"),
        ({"model": "fake-chat", "messages": [{"role": "wizard", "content": "x"}]},
         "messages[0].role", "must be one of"),
        ({"model": "fake-chat", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content", "must be a string or an array"),
        ({**CHAT, "stream_options": {"include_usage": "x"}}, "stream_options.include_usage",
         "must be a boolean"),
    ],
)
async def test_bad_fields_are_400_naming_the_field(
    gateway: Gateway, body: dict[str, Any], param: str, fragment: str
) -> None:
    status, payload, _ = await post(gateway, "/v1/chat/completions", body)
    assert status == 400
    assert payload["error"]["param"] == param
    assert fragment in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [(b"{not json", "not valid JSON"), (b"", "empty"), (b"[1, 2]", "must be a JSON object")],
)
async def test_malformed_bodies_are_400(gateway: Gateway, data: bytes, fragment: str) -> None:
    status, payload, _ = await post(gateway, "/v1/chat/completions", data=data,
                                    headers={"Content-Type": "application/json"})
    assert status == 400
    assert fragment in payload["error"]["message"]


async def test_body_over_the_limit_is_413(upstream: FakeOpenAI,
                                          gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(base_config(upstream.base_url, limits={"max_body_bytes": 2048}))
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    status, payload, _ = await post(gw, "/v1/chat/completions", big)
    assert status == 413
    assert "limit" in payload["error"]["message"]
    assert not upstream.requests


async def test_unknown_route_and_method(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gateway.http}/v1/nothing/here") as r:
            assert r.status == 404
            assert (await r.json())["error"]["type"] == "not_found_error"
        async with s.get(f"{gateway.http}/v1/chat/completions") as r:
            assert r.status == 405
            assert "not allowed" in (await r.json())["error"]["message"]


async def test_request_id_echoed_and_carried_upstream(gateway: Gateway,
                                                      upstream: FakeOpenAI) -> None:
    status, _, resp = await post(gateway, "/v1/chat/completions", CHAT,
                                 headers={"X-Request-Id": "abc-123"})
    assert status == 200
    assert resp.headers["X-Request-Id"] == "abc-123"
    assert upstream.requests[-1].headers["X-Request-Id"] == "abc-123"
    status, _, resp = await post(gateway, "/v1/chat/completions", CHAT)
    generated = resp.headers["X-Request-Id"]
    assert len(generated) == 32
    assert upstream.requests[-1].headers["X-Request-Id"] == generated
    # A malformed id is replaced, not passed on.
    _, _, resp = await post(gateway, "/v1/chat/completions", CHAT,
                            headers={"X-Request-Id": "bad id\twith spaces"})
    assert resp.headers["X-Request-Id"] != "bad id\twith spaces"


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan", "inf"])
async def test_bad_timeout_header_is_400(gateway: Gateway, value: str) -> None:
    status, payload, _ = await post(gateway, "/v1/chat/completions", CHAT,
                                    headers={"OICM-Request-Timeout": value})
    assert status == 400
    assert payload["error"]["param"] == "OICM-Request-Timeout"


async def test_sse_framing_is_exact(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as s, s.post(
        f"{gateway.http}/v1/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-cache"
        assert r.headers["X-Accel-Buffering"] == "no"
        raw = (await r.read()).decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    import json

    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-1])
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == REPLY
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in chunks[-1]  # not asked for


async def test_chunks_are_forwarded_as_they_arrive(gateway: Gateway,
                                                   upstream: FakeOpenAI) -> None:
    upstream.token_delay = 0.05
    arrivals: list[float] = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as s, s.post(
        f"{gateway.http}/v1/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        async for line in r.content:
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic() - started)
    # 13 tokens 50 ms apart: the first arrives long before the last.
    assert len(arrivals) >= 13
    assert arrivals[-1] - arrivals[1] > 0.4
    gaps = [b - a for a, b in itertools.pairwise(arrivals[1:-1])]
    assert max(gaps) < 0.5 and sorted(gaps)[len(gaps) // 2] > 0.02


async def test_client_disconnect_mid_stream_closes_the_upstream(
    gateway: Gateway, upstream: FakeOpenAI
) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.post(f"{gateway.http}/v1/chat/completions",
                         json={**CHAT, "model": "fake-endless", "stream": True})
        seen = 0
        async for line in r.content:
            if line.startswith(b"data: {"):
                seen += 1
                if seen == 5:
                    break
        r.close()  # the client goes away mid-stream
    await asyncio.wait_for(upstream.disconnected.wait(), 3)
    assert upstream.streams_finished == 0


async def test_stream_failing_before_first_token_is_a_plain_error(gateway: Gateway) -> None:
    status, payload, resp = await post(gateway, "/v1/chat/completions",
                                       {**CHAT, "model": "fake-500", "stream": True})
    assert status == 502
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "HTTP 500" in payload["error"]["message"]


async def test_upstream_timeout_through_the_edge_is_504(gateway: Gateway) -> None:
    status, payload, resp = await post(gateway, "/v1/chat/completions",
                                       {**CHAT, "model": "fake-slow"},
                                       headers={"OICM-Request-Timeout": "0.4"})
    assert status == 504
    assert payload["error"]["type"] == "timeout_error"
    assert resp.headers["x-should-retry"] == "false"


async def test_deadline_mid_stream_ends_with_an_error_event(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as s, s.post(
        f"{gateway.http}/v1/chat/completions",
        json={**CHAT, "model": "fake-slowstream", "stream": True},
        headers={"OICM-Request-Timeout": "0.4"},
    ) as r:
        assert r.status == 200
        events = (await r.read()).decode().split("\n\n")
    assert events[-2] == "data: [DONE]"
    assert '"type":"timeout_error"' in events[-3]


async def test_metrics_exposition(gateway: Gateway) -> None:
    await post(gateway, "/v1/chat/completions", CHAT)
    await post(gateway, "/v1/chat/completions", {**CHAT, "model": "made-up-model-name"})
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gateway.http}/v1/chat/completions",
                          json={**CHAT, "stream": True}) as r:
            await r.read()
        async with s.get(f"{gateway.http}/metrics") as r:
            assert r.status == 200
            text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = families["gateway_requests"].samples
    labels = [s.labels for s in requests if s.name == "gateway_requests_total"]
    assert {"dialect": "openai", "task": "chat", "model": "fake-chat", "code": "200"} in labels
    assert {"dialect": "openai", "task": "chat", "model": "unknown", "code": "404"} in labels
    assert "made-up-model-name" not in text  # labels are bounded
    ttft = [s for s in families["gateway_time_to_first_token_seconds"].samples
            if s.name.endswith("_count") and s.labels["model"] == "fake-chat"]
    assert ttft and ttft[0].value >= 1
    overhead = [s for s in families["gateway_overhead_seconds"].samples
                if s.name.endswith("_count")]
    assert overhead and sum(s.value for s in overhead) >= 2
    for name in ("gateway_prompt_tokens", "gateway_completion_tokens",
                 "gateway_requests_in_flight", "gateway_request_duration_seconds",
                 "gateway_request_errors", "gateway_upstream_errors"):
        assert name in families, name


async def test_metrics_label_the_model_the_core_resolved(upstream: FakeOpenAI,
                                                         gateway_factory: GatewayFactory) -> None:
    """The edge keeps no copy of the model names: the core names the model a request resolved
    to (a trailer), unary or streamed, failed or not; before that, the label is "unknown"."""
    data = base_config(upstream.base_url)
    for model in data["models"]:
        if model["id"] in ("fake-chat", "fake-500"):
            model["aliases"] = [f"alias-of-{model['id']}"]
    gw = await gateway_factory(data)

    async def count(model: str, code: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(f"{gw.http}/metrics") as r:
            text = await r.text()
        labels = {"dialect": "openai", "task": "chat", "model": model, "code": code}
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "gateway_requests_total" and s.labels == labels)

    cases = [({**CHAT, "model": "alias-of-fake-chat"}, "fake-chat", "200"),
             ({**CHAT, "model": "alias-of-fake-chat", "stream": True}, "fake-chat", "200"),
             ({**CHAT, "model": "alias-of-fake-500"}, "fake-500", "502"),
             ({**CHAT, "model": "alias-of-fake-500", "stream": True}, "fake-500", "502")]
    for body, model, code in cases:
        before = await count(model, code)
        async with aiohttp.ClientSession() as s, s.post(f"{gw.http}/v1/chat/completions",
                                                        json=body) as r:
            await r.read()
            assert r.status == int(code)
        assert await count(model, code) == before + 1, body


async def test_health_follows_the_core(upstream: FakeOpenAI,
                                       gateway_factory: GatewayFactory) -> None:
    gw = await gateway_factory(base_config(upstream.base_url))
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gw.http}/health") as r:
            assert r.status == 200
        await gw.core.stop(0)
        async with s.get(f"{gw.http}/health") as r:
            assert r.status == 503
        async with s.post(f"{gw.http}/v1/chat/completions", json=CHAT) as r:
            assert r.status == 503
            assert "unavailable" in (await r.json())["error"]["message"]


async def test_deeply_nested_passthrough_is_400_not_500(gateway: Gateway) -> None:
    deep: Any = "x"
    for _ in range(60):
        deep = {"a": deep}
    for body in ({**CHAT, "logit_bias_like": deep},
                 {**CHAT, "response_format": {"type": "json_schema",
                                              "json_schema": {"name": "n", "schema": deep}}}):
        status, payload, _ = await post(gateway, "/v1/chat/completions", body)
        assert status == 400, payload
        assert "nested more than" in payload["error"]["message"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/audio/transcriptions"])
async def test_body_that_does_not_match_its_encoding_is_400(gateway: Gateway, path: str) -> None:
    content_type = ("application/json" if "chat" in path
                    else "multipart/form-data; boundary=xyz")
    status, payload, _ = await post(gateway, path, data=b"this is not gzip at all",
                                    headers={"Content-Type": content_type,
                                             "Content-Encoding": "gzip"})
    assert status == 400, payload
    assert "cannot be decoded" in payload["error"]["message"]


async def test_upstream_404_message_hides_credentials_in_its_url(
    upstream: FakeOpenAI, gateway_factory: GatewayFactory
) -> None:
    url = upstream.base_url.replace("http://", "http://user:s3cret@") + "/missing?api_key=k3y"
    data = base_config(upstream.base_url)
    data["models"].append({"id": "wrong-path", "task": "chat", "provider": "openai",
                           "upstream_url": url})
    gw = await gateway_factory(data)
    status, payload, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "wrong-path"})
    assert status == 502
    message = payload["error"]["message"]
    assert "HTTP 404" in message and "/missing" in message
    assert "s3cret" not in message and "k3y" not in message and "user" not in message
    assert "127.0.0.1" not in message  # the path only: never the upstream's address


async def test_an_upstream_answer_over_the_models_bound_is_502(
        upstream: FakeOpenAI, gateway_factory: GatewayFactory) -> None:
    """An upstream answer is read whole only up to the model's max_response_bytes."""
    data = base_config(upstream.base_url)
    data["models"].append({"id": "small-answers", "task": "chat", "provider": "openai",
                           "upstream_url": upstream.base_url, "upstream_model": "llama",
                           "max_response_bytes": 200,
                           "options": {"unary_via_stream": False}})
    gw = await gateway_factory(data)
    status, payload, _ = await post(gw, "/v1/chat/completions", CHAT)
    assert status == 200  # the fake's answer is a few hundred bytes
    status, payload, _ = await post(gw, "/v1/chat/completions",
                                    {**CHAT, "model": "small-answers"})
    assert status == 502, payload
    assert "upstream answered with more than 200 bytes" in payload["error"]["message"]


MALFORMED = [
    b"Authorization: Bearer igw_leakcheck_one\x01tail\r\n",  # a control byte in the value
    b"Authorization Bearer igw_leakcheck_two\r\n",  # no colon
    b"Authorization: Bearer igw_leakcheck_three\r\nContent-Length: 2\r\n",  # duplicate length
]


@pytest.mark.parametrize("header", MALFORMED, ids=["control-byte", "no-colon", "duplicate"])
async def test_unparseable_request_is_400_and_its_bytes_never_logged(
    gateway: Gateway, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """aiohttp quotes the line it could not parse in its log record, with a traceback: the
    edge's log names the problem in one line instead, so a credential in that line stays out."""
    host, port = gateway.http.removeprefix("http://").rsplit(":", 1)
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n" + header
                 + b"Content-Length: 2\r\n\r\n{}")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 ")
    for _ in range(50):  # the record is written as the error response is made
        if any("client error from" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.01)
    records = [r for r in caplog.records if "client error from" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO
    assert records[0].exc_info is None
    assert "igw_leakcheck" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_upstream_credential_from_the_named_environment_variable(
    upstream: FakeOpenAI, gateway_factory: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``api_key_env`` names the variable holding the upstream's key: sent as a bearer token to
    that upstream only, and never the caller's own credential."""
    monkeypatch.setenv("IGW_TEST_UPSTREAM_KEY", "sk-upstream-123")
    models = [{"id": "keyed", "task": "chat", "provider": "openai",
               "upstream_url": upstream.base_url, "upstream_model": "llama",
               "api_key_env": "IGW_TEST_UPSTREAM_KEY"},
              {"id": "open", "task": "chat", "provider": "openai",
               "upstream_url": upstream.base_url, "upstream_model": "llama"}]
    gw = await gateway_factory(base_config(upstream.base_url, models=models))
    caller = {"Authorization": "Bearer caller-secret"}
    status, _, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "keyed"},
                              headers=caller)
    assert status == 200
    assert upstream.requests[-1].headers["Authorization"] == "Bearer sk-upstream-123"
    async with aiohttp.ClientSession() as s, s.post(
        f"{gw.http}/v1/chat/completions", json={**CHAT, "model": "keyed", "stream": True},
        headers=caller,
    ) as r:
        assert r.status == 200
        assert (await r.read()).endswith(b"data: [DONE]\n\n")
    assert upstream.requests[-1].headers["Authorization"] == "Bearer sk-upstream-123"
    status, _, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "open"},
                              headers={"Authorization": "Bearer caller-secret"})
    assert status == 200
    assert "Authorization" not in upstream.requests[-1].headers
