"""Parity of the in-process channel (``gateway_core/local_channel.py``) with a real gRPC channel:
the same calls, against one core in front of the fake upstream, over ``127.0.0.1:{core.port}`` and
over ``core.local_channel()``, end with the same status, details, ``igw-reason`` and responses."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway_common.config import parse_config
from gateway_core.errors import REASON_KEY, UPSTREAM_SECONDS_KEY
from gateway_core.interceptors import (
    BehaviorInterceptor,
    StreamBehavior,
    UnaryBehavior,
    current_model,
    current_request_id,
)
from gateway_core.local_channel import LocalServer, LocalUnaryStreamCall
from gateway_core.server import CoreHandle, start_core
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import admin_pb2_grpc as apb_grpc
from inference_gateway.v1 import inference_pb2 as pb
from inference_gateway.v1 import inference_pb2_grpc as pb_grpc
from tests.auth.kit import auth_config, bearer, chat
from tests.conftest import base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

Channels = dict[str, aio.Channel]
Md = tuple[tuple[str, str], ...]
Work = Callable[[aio.Channel], Awaitable[Any]]
# A prompt whose mock reply ("This is a mock reply to: " + 48 words) is 54 tokens: 55 chunks.
LONG = " ".join(f"w{i}" for i in range(48))
LONG_CHUNKS = 6 + 48 + 1


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode | str  # "CancelledError" when the caller got asyncio.CancelledError
    details: str | None = None
    reason: str | None = None


async def outcome(work: Awaitable[Any]) -> Outcome:
    try:
        await work
    except aio.AioRpcError as exc:
        reason = dict(exc.trailing_metadata() or ()).get(REASON_KEY)
        return Outcome(exc.code(), exc.details(), None if reason is None else str(reason))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():  # our own cancellation: not an outcome
            raise
        return Outcome("CancelledError")
    return Outcome(grpc.StatusCode.OK)


async def until(condition: Callable[[], object], seconds: float = 3.0) -> None:
    """Wait, yielding to the loop, until ``condition()`` holds (a failure after ``seconds``)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.005)


async def drain(call: AsyncIterable[Any]) -> list[Any]:
    return [item async for item in call]


def content(msg: Message) -> Message:
    """The message without what differs between two identical calls (id, created)."""
    out = type(msg)()
    out.CopyFrom(msg)
    for name in ("id", "created"):
        if name in out.DESCRIPTOR.fields_by_name:
            out.ClearField(name)
    return out


class Probe(BehaviorInterceptor):
    """Innermost interceptor: what the core's context holds around each handler, and how many
    messages the streams have yielded."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []  # (model before, model after, request id after)
        self.streamed = 0

    async def around_unary(self, method: str, behavior: UnaryBehavior, request: Any,
                           context: aio.ServicerContext[Any, Any]) -> Any:
        before = current_model.get()
        try:
            return await behavior(request, context)
        finally:
            self.seen.append((before, current_model.get(), current_request_id.get()))

    async def around_stream(self, method: str, behavior: StreamBehavior, request: Any,
                            context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        before = current_model.get()
        try:
            async for item in behavior(request, context):
                self.streamed += 1
                yield item
        finally:
            self.seen.append((before, current_model.get(), current_request_id.get()))


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def core(upstream: FakeOpenAI, probe: Probe) -> AsyncIterator[CoreHandle]:
    handle = await start_core(parse_config(base_config(upstream.base_url)), host="127.0.0.1",
                              port=0, extra_interceptors=[probe])
    yield handle
    await handle.stop(0)


@pytest.fixture
async def channels(core: CoreHandle) -> AsyncIterator[Channels]:
    real = aio.insecure_channel(f"127.0.0.1:{core.port}")
    yield {"grpc": real, "local": core.local_channel()}
    await real.close()


async def on_both(channels: Channels, work: Work) -> dict[str, Outcome]:
    return {name: await outcome(work(ch)) for name, ch in channels.items()}


def unary_chat(request: pb.ChatRequest, md: Md = (), timeout: float = 5) -> Work:
    return lambda ch: pb_grpc.InferenceStub(ch).Chat(request, metadata=md, timeout=timeout)


def stream_chat(request: pb.ChatRequest, md: Md = (), timeout: float = 5) -> Work:
    return lambda ch: drain(pb_grpc.InferenceStub(ch).ChatStream(request, metadata=md,
                                                                  timeout=timeout))


async def test_unary_chat(channels: Channels) -> None:
    responses: dict[str, Message] = {}
    for name, ch in channels.items():
        call = pb_grpc.InferenceStub(ch).Chat(chat("fake-chat"), timeout=5)
        resp = await call
        assert await call.code() == grpc.StatusCode.OK
        assert float(dict(await call.trailing_metadata() or ())[UPSTREAM_SECONDS_KEY]) > 0, name
        responses[name] = content(resp)
    assert responses["local"] == responses["grpc"]
    assert isinstance(responses["local"], pb.ChatResponse)
    assert responses["local"].choices[0].message.content == REPLY


async def test_chat_stream(channels: Channels, upstream: FakeOpenAI) -> None:
    chunks: dict[str, list[Message]] = {}
    for name, ch in channels.items():
        stub = pb_grpc.InferenceStub(ch)
        # The mock provider sends one chunk per token: the sequences compare one to one.
        call = stub.ChatStream(chat("mock-chat", LONG), timeout=5)
        chunks[name] = [content(c) for c in await drain(call)]
        assert await call.code() == grpc.StatusCode.OK
        assert await call.details() == ""
        assert UPSTREAM_SECONDS_KEY in dict(await call.trailing_metadata() or ())
        # Through the fake upstream, events of one read are merged: compare the text.
        fake = await drain(stub.ChatStream(chat("fake-chat"), timeout=5))
        assert "".join(c.delta.content for f in fake for c in f.choices) == REPLY, name
        assert fake[-1].choices[0].finish_reason == "stop"
    assert chunks["local"] == chunks["grpc"]
    assert len(chunks["local"]) == LONG_CHUNKS
    assert upstream.streams_finished == 2


@pytest.mark.parametrize(
    ("request_", "code", "reason"),
    [
        (chat("nope"), grpc.StatusCode.NOT_FOUND, "model_not_found"),
        (pb.ChatRequest(model="fake-chat"), grpc.StatusCode.INVALID_ARGUMENT, "invalid_request"),
        (chat("mock-embedding"), grpc.StatusCode.INVALID_ARGUMENT, "task_mismatch"),
        (chat("fake-refused"), grpc.StatusCode.UNAVAILABLE, "upstream_error"),
        (chat("fake-400"), grpc.StatusCode.INVALID_ARGUMENT, "upstream_rejected"),
        (chat("fake-miderror"), grpc.StatusCode.UNAVAILABLE, "upstream_error"),
    ],
    ids=["unknown-model", "no-messages", "task", "refused", "upstream-400", "mid-stream"],
)
async def test_error_statuses(channels: Channels, request_: pb.ChatRequest,
                              code: grpc.StatusCode, reason: str) -> None:
    mid_stream = request_.model == "fake-miderror"  # a unary call of it succeeds
    for work in ([] if mid_stream else [unary_chat(request_)]) + [stream_chat(request_)]:
        outcomes = await on_both(channels, work)
        assert outcomes["local"] == outcomes["grpc"]
        assert (outcomes["local"].code, outcomes["local"].reason) == (code, reason)
        assert outcomes["local"].details


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_deadline_cancels_the_upstream(channels: Channels, upstream: FakeOpenAI,
                                             stream: bool) -> None:
    upstream.slow_seconds = 5.0  # the deadline, not the upstream, must end the call
    work = (stream_chat(chat("fake-slowstream"), timeout=0.3) if stream
            else unary_chat(chat("fake-slow"), timeout=0.3))
    codes = {}
    for name, ch in channels.items():
        upstream.disconnected.clear()
        started = time.monotonic()
        got = await outcome(work(ch))
        assert time.monotonic() - started < 2.5, name
        # Who notices first (the provider's timer or the call's) is a race on both channels:
        # either is a correct report of the same DEADLINE_EXCEEDED.
        assert got.reason in (None, "upstream_timeout") and "deadline" in str(got.details).lower()
        codes[name] = got.code
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
    assert codes["local"] == codes["grpc"] == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_cancelled_stream_closes_the_upstream(channels: Channels,
                                                    upstream: FakeOpenAI) -> None:
    ends: dict[str, tuple[grpc.StatusCode, str, Outcome]] = {}
    for name, ch in channels.items():
        upstream.disconnected.clear()
        call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-endless"), timeout=10)
        first = await call.read()
        assert isinstance(first, pb.ChatChunk) and first.choices
        assert call.cancel()
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        ends[name] = (await call.code(), await call.details(), await outcome(call.read()))
        assert call.cancelled() and call.done()
    assert ends["local"] == ends["grpc"]
    assert ends["local"][0] == grpc.StatusCode.CANCELLED
    assert ends["local"][2] == Outcome("CancelledError")
    assert upstream.streams_finished == 0


async def test_unknown_method_is_unimplemented(channels: Channels) -> None:
    method = "/inference_gateway.v1.Inference/Nope"

    def unary(ch: aio.Channel) -> Awaitable[Any]:  # a real channel needs the (de)serializers
        return ch.unary_unary(method, request_serializer=pb.ChatRequest.SerializeToString,
                              response_deserializer=pb.ChatResponse.FromString)(chat("x"))

    def stream(ch: aio.Channel) -> Awaitable[Any]:
        return drain(ch.unary_stream(method, request_serializer=pb.ChatRequest.SerializeToString,
                                     response_deserializer=pb.ChatChunk.FromString)(chat("x")))

    for work in (unary, stream):
        outcomes = await on_both(channels, work)
        assert outcomes["local"] == outcomes["grpc"]
        assert outcomes["local"].code == grpc.StatusCode.UNIMPLEMENTED


async def test_health(channels: Channels) -> None:
    statuses = {}
    for name, ch in channels.items():
        health = health_pb2_grpc.HealthStub(ch)
        resp = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
        statuses[name] = resp.status
    assert statuses["local"] == statuses["grpc"] == health_pb2.HealthCheckResponse.SERVING
    missing = await on_both(channels, lambda ch: health_pb2_grpc.HealthStub(ch).Check(
        health_pb2.HealthCheckRequest(service="no.Such"), timeout=2))
    assert missing["local"] == missing["grpc"]
    assert missing["local"].code == grpc.StatusCode.NOT_FOUND


async def test_auth_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    core = await start_core(parse_config(auth_config(tmp_path / "data")), host="127.0.0.1",
                            port=0)
    real = aio.insecure_channel(f"127.0.0.1:{core.port}")
    try:
        assert core.auth is not None and core.auth.bootstrap.admin_secret is not None
        created = await apb_grpc.AdminStub(core.local_channel()).CreateToken(
            apb.CreateTokenRequest(name="chat only", models=["mock-chat"]),
            metadata=bearer(core.auth.bootstrap.admin_secret), timeout=5)
        chat_only = bearer(created.secret)
        channels: Channels = {"grpc": real, "local": core.local_channel()}
        cases = [
            (chat("mock-chat"), (), grpc.StatusCode.UNAUTHENTICATED, "auth_missing"),
            (chat("mock-chat"), bearer("igw_abc"), grpc.StatusCode.UNAUTHENTICATED,
             "auth_malformed"),
            (chat("mock-completion"), chat_only, grpc.StatusCode.PERMISSION_DENIED,
             "auth_forbidden_model"),
            (chat("mock-chat"), chat_only, grpc.StatusCode.OK, None),
        ]
        for request, md, code, reason in cases:
            for work in (unary_chat(request, md), stream_chat(request, md)):
                outcomes = await on_both(channels, work)
                assert outcomes["local"] == outcomes["grpc"]
                assert (outcomes["local"].code, outcomes["local"].reason) == (code, reason)
    finally:
        await real.close()
        await core.stop(0)


async def test_core_context_stays_in_the_core(channels: Channels, probe: Probe) -> None:
    model_token = current_model.set("caller-model")
    request_token = current_request_id.set("caller-request")
    try:
        for ch in channels.values():
            stub = pb_grpc.InferenceStub(ch)
            # A local stream's handler runs in the reader's task: in its own context all the same.
            for work in (stub.Chat(chat("fake-chat"), metadata=(("x-request-id", "req-1"),),
                                   timeout=5),
                         drain(stub.ChatStream(chat("fake-chat"),
                                               metadata=(("x-request-id", "req-1"),), timeout=5))):
                await work
                # The core set its own values, and did not see the caller's ...
                assert probe.seen[-1] == ("", "fake-chat", "req-1")
                # ... which the call left as they were.
                assert (current_model.get(), current_request_id.get()) == (
                    "caller-model", "caller-request")
    finally:
        current_request_id.reset(request_token)
        current_model.reset(model_token)
    assert len(probe.seen) == 4


async def _stop_during_slow_call(ch: aio.Channel, stop: Callable[[float], Awaitable[None]],
                                 upstream: FakeOpenAI, stream: bool = False
                                 ) -> tuple[Outcome, float]:
    """Stop with a 0.2 s grace while a slow call (5 s upstream) runs: how it ended, and when."""
    upstream.slow_seconds = 5.0
    stub = pb_grpc.InferenceStub(ch)
    call = (drain(stub.ChatStream(chat("fake-slow"), timeout=10)) if stream
            else stub.Chat(chat("fake-slow"), timeout=10))
    asked = sum(r.body.get("model") == "slow" for r in upstream.requests)
    waiter = asyncio.ensure_future(outcome(call))
    await until(lambda: sum(r.body.get("model") == "slow" for r in upstream.requests) > asked)
    started = time.monotonic()
    await stop(0.2)
    return await asyncio.wait_for(waiter, 3), time.monotonic() - started


async def test_stop(core: CoreHandle, channels: Channels, upstream: FakeOpenAI) -> None:
    assert core.local is not None
    local = pb_grpc.InferenceStub(channels["local"])
    upstream.token_delay = 0.002  # a stream of about 0.03 s: it ends within the grace
    calm = asyncio.ensure_future(outcome(drain(local.ChatStream(chat("fake-chat"), timeout=5))))
    _, elapsed = await _stop_during_slow_call(channels["local"], core.local.stop, upstream)
    assert 0.15 < elapsed < 2.5  # the slow call is cancelled when the grace passes ...
    await asyncio.wait_for(upstream.disconnected.wait(), 2)  # ... and so is its upstream request
    assert (await calm).code == grpc.StatusCode.OK
    assert upstream.streams_finished == 1
    # New calls are refused, as by the stopped gRPC port.
    await core.stop(0)
    remote = await outcome(pb_grpc.InferenceStub(channels["grpc"]).Chat(chat("mock-chat"),
                                                                         timeout=2))
    assert remote.code == grpc.StatusCode.UNAVAILABLE
    assert (await outcome(local.Chat(chat("mock-chat"), timeout=2))).code == remote.code
    assert (await outcome(drain(local.ChatStream(chat("mock-chat"))))).code == remote.code


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_stop_ends_a_running_call_as_grpc_does(core: CoreHandle, channels: Channels,
                                                     upstream: FakeOpenAI, stream: bool) -> None:
    assert core.local is not None
    remote, _ = await _stop_during_slow_call(channels["grpc"], core.server.stop, upstream, stream)
    local, elapsed = await _stop_during_slow_call(channels["local"], core.local.stop, upstream,
                                                  stream)
    assert elapsed < 2.5
    assert remote.code == grpc.StatusCode.UNAVAILABLE
    assert (local.code, local.details) == (remote.code, remote.details)


async def test_stream_runs_as_its_reader_reads(channels: Channels, probe: Probe) -> None:
    """The local stream's handler runs in the reader's task, one message per read, no further."""
    call = pb_grpc.InferenceStub(channels["local"]).ChatStream(chat("mock-chat", LONG), timeout=5)
    assert isinstance(call, LocalUnaryStreamCall)
    for _ in range(20):
        await asyncio.sleep(0)
    assert probe.streamed == 0  # not started before the first read
    read = [await call.read()]
    for _ in range(20):
        await asyncio.sleep(0)
    assert probe.streamed == 1  # the mock has no delay: anything running ahead would show
    read += [await call.read() for _ in range(5)]
    assert probe.streamed == 6
    read += await drain(call)
    assert await call.code() == grpc.StatusCode.OK
    real = await drain(pb_grpc.InferenceStub(channels["grpc"]).ChatStream(
        chat("mock-chat", LONG), timeout=5))
    assert [content(c) for c in read] == [content(c) for c in real]
    assert len(read) == LONG_CHUNKS


async def _stream_left_unread(ch: aio.Channel, upstream: FakeOpenAI, deadline: float
                              ) -> aio.UnaryStreamCall[Any, Any]:
    """An endless stream, read once, then left alone by its caller."""
    upstream.disconnected.clear()
    call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-endless"), timeout=deadline)
    first = await call.read()
    assert isinstance(first, pb.ChatChunk) and first.choices
    return call


async def test_deadline_between_reads_cancels_the_handler(channels: Channels,
                                                          upstream: FakeOpenAI) -> None:
    """Nobody reads when the deadline passes: the handler is cancelled all the same."""
    for name, ch in channels.items():
        call = await _stream_left_unread(ch, upstream, deadline=1.0)
        await asyncio.wait_for(upstream.disconnected.wait(), 2.5)
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED, name
        assert call.done(), name
        if name == "local":  # (gRPC may still hand out what it had buffered)
            got = await outcome(call.read())
            assert (got.code, got.details) == (grpc.StatusCode.DEADLINE_EXCEEDED,
                                               "Deadline Exceeded")
    assert upstream.streams_finished == 0


async def test_stop_between_reads_cancels_the_handler(core: CoreHandle, channels: Channels,
                                                      upstream: FakeOpenAI) -> None:
    assert core.local is not None
    call = await _stream_left_unread(channels["local"], upstream, deadline=10)
    started = time.monotonic()
    await core.local.stop(0.2)  # returns once the handler has ended (after the grace)
    assert 0.15 < time.monotonic() - started < 2.5
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    assert await call.code() == grpc.StatusCode.UNAVAILABLE
    got = await outcome(call.read())
    assert (got.code, got.details) == (grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")


async def test_cancel_during_a_read_in_another_task(channels: Channels,
                                                    upstream: FakeOpenAI) -> None:
    """The read raises CancelledError; the reading task itself is not left cancelled."""
    upstream.slow_seconds = 5.0
    for name, ch in channels.items():
        upstream.disconnected.clear()
        call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-slowstream"), timeout=10)
        reader = asyncio.ensure_future(outcome(drain(call)))
        await until(lambda: any(r.body.get("model") == "slow-stream" for r in upstream.requests))
        await asyncio.sleep(0.05)  # the reader waits in its read
        assert call.cancel(), name
        assert await asyncio.wait_for(reader, 2) == Outcome("CancelledError"), name
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        assert await call.code() == grpc.StatusCode.CANCELLED, name
        assert call.cancelled() and not call.cancel(), name
        upstream.requests.clear()


async def test_cancelled_before_it_ran(channels: Channels) -> None:
    """cancel() in the step that made the call: read() raises, the call says it was cancelled."""
    for name, ch in channels.items():
        stream = pb_grpc.InferenceStub(ch).ChatStream(chat("mock-chat"), timeout=1)
        stream.cancel()
        assert (await outcome(asyncio.wait_for(stream.read(), 3))).code == "CancelledError", name
        unary = pb_grpc.InferenceStub(ch).Chat(chat("fake-chat"), timeout=5)
        unary.cancel()
        assert unary.cancelled(), name
        assert await unary.code() == grpc.StatusCode.CANCELLED, name
        assert await unary.details() == "Locally cancelled by application!", name


async def test_read_after_cancel_raises(channels: Channels) -> None:
    """No message is handed out once the caller has cancelled, buffered or not."""
    for name, ch in channels.items():
        call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-endless"), timeout=10)
        await call.read()
        await asyncio.sleep(0.2)  # gRPC's buffer fills (the local handler waits for the reader)
        call.cancel()
        assert (await outcome(call.read())).code == "CancelledError", name


async def test_close_cancels_running_calls(core: CoreHandle) -> None:
    for name, ch in (("grpc", aio.insecure_channel(f"127.0.0.1:{core.port}")),
                     ("local", core.local_channel())):
        call = pb_grpc.InferenceStub(ch).Chat(chat("fake-slow"), timeout=5)
        await asyncio.sleep(0.1)
        await ch.close()
        assert await asyncio.wait_for(call.code(), 1) == grpc.StatusCode.CANCELLED, name
        with pytest.raises(aio.UsageError):
            pb_grpc.InferenceStub(ch).Chat(chat("fake-chat"), timeout=5)


@pytest.mark.parametrize("stop_in_same_step", [False, True], ids=["running", "not-started"])
async def test_stop_without_grace_ends_calls_unavailable(
        core: CoreHandle, channels: Channels, stop_in_same_step: bool) -> None:
    assert core.local is not None
    call = pb_grpc.InferenceStub(channels["local"]).Chat(chat("fake-slow"), timeout=5)
    if not stop_in_same_step:
        await asyncio.sleep(0.05)
    started = time.monotonic()
    await core.local.stop(None)  # None, as 0: no grace (grpc's meaning)
    got = await asyncio.wait_for(outcome(call), 3)
    assert time.monotonic() - started < 1.5  # not the slow upstream's 2 s
    assert (got.code, got.details) == (grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")


async def read_in_a_task(call: aio.UnaryStreamCall[Any, Any], upstream: FakeOpenAI
                         ) -> asyncio.Future[tuple[Outcome, int]]:
    """Drain ``call`` (a ``fake-slowstream`` stream) in a task of its own, returned once that
    task waits in a read: how the reading ended, and how cancelled the task was left."""
    async def read() -> tuple[Outcome, int]:
        got = await outcome(drain(call))
        task = asyncio.current_task()
        assert task is not None
        return got, task.cancelling()

    reader = asyncio.ensure_future(read())
    await until(lambda: any(r.body.get("model") == "slow-stream" for r in upstream.requests))
    await asyncio.sleep(0.05)  # the reader waits in its read
    return reader


async def test_second_cancel_during_a_read(channels: Channels, upstream: FakeOpenAI) -> None:
    """cancel() twice while another task reads: the second returns False, the call is done at
    once, and the reader's task is not left cancelled (as on a gRPC channel)."""
    upstream.slow_seconds = 5.0
    seen = {}
    for name, ch in channels.items():
        upstream.requests.clear()
        call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-slowstream"), timeout=10)

        reader = await read_in_a_task(call, upstream)
        first, second = call.cancel(), call.cancel()
        seen[name] = (first, second, call.done(), await asyncio.wait_for(reader, 2))
    assert seen["local"] == seen["grpc"] == (True, False, True, (Outcome("CancelledError"), 0))


async def test_upstream_seconds_exclude_the_readers_time(channels: Channels,
                                                         upstream: FakeOpenAI) -> None:
    """``igw-upstream-seconds`` times the upstream, not how slowly the caller takes the messages
    (the edge's overhead figure is its time minus that)."""
    upstream.token_delay = 0.002  # about one event per network read: a message each
    measured = {}
    for name, ch in channels.items():
        call = pb_grpc.InferenceStub(ch).ChatStream(chat("fake-chat"), timeout=10)
        messages = 0
        async for _ in call:
            messages += 1
            await asyncio.sleep(0.1)  # as an edge writing to a slow client
        seconds = float(dict(await call.trailing_metadata() or ())[UPSTREAM_SECONDS_KEY])
        measured[name] = (messages, seconds)
    # The reader spent messages x 0.1 s (the local handler waits for it: what arrived
    # meanwhile comes as one message); the upstream answers in a fraction of that.
    assert measured["local"][0] >= 2, measured
    assert measured["local"][1] < 0.1 * measured["local"][0] / 2, measured
    assert measured["local"][1] < measured["grpc"][1] + 0.1, measured


class Swallow(BehaviorInterceptor):
    """A handler that does not let its cancellation through: it ends its stream quietly, or
    (``go_on``) sends one more message and goes on waiting."""

    def __init__(self, go_on: bool = False) -> None:
        super().__init__()
        self.go_on = go_on

    async def around_stream(self, method: str, behavior: StreamBehavior, request: Any,
                            context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for item in behavior(request, context):
                yield item
        except asyncio.CancelledError:
            if self.go_on:
                yield pb.ChatChunk()
                await asyncio.sleep(5)


@pytest.fixture
async def swallowing(upstream: FakeOpenAI) -> AsyncIterator[Channels]:
    handle = await start_core(parse_config(base_config(upstream.base_url)), host="127.0.0.1",
                              port=0, extra_interceptors=[Swallow()])
    real = aio.insecure_channel(f"127.0.0.1:{handle.port}")
    yield {"grpc": real, "local": handle.local_channel()}
    await real.close()
    await handle.stop(0)


async def test_cut_short_whatever_the_handler_makes_of_it(swallowing: Channels,
                                                          upstream: FakeOpenAI) -> None:
    """A handler that swallows its cancellation: the deadline still ends the call with
    DEADLINE_EXCEEDED (not a stream that looks complete), and a caller's own timeout around a
    read still fires; neither leaves the reading task cancelled."""
    upstream.slow_seconds = 5.0
    for name, ch in swallowing.items():
        stub = pb_grpc.InferenceStub(ch)
        got = await outcome(drain(stub.ChatStream(chat("fake-slowstream"), timeout=0.3)))
        assert got.code == grpc.StatusCode.DEADLINE_EXCEEDED, name
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0, name
        call = stub.ChatStream(chat("fake-slowstream"), timeout=10)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await drain(call)
        assert task.cancelling() == 0, name
        assert await asyncio.wait_for(call.code(), 2) == grpc.StatusCode.CANCELLED, name


async def test_a_stream_dropped_unread_is_closed(core: CoreHandle, channels: Channels,
                                                 upstream: FakeOpenAI, probe: Probe) -> None:
    """A caller that drops a local stream mid-way without cancelling it (and with no deadline):
    the call goes with it and its handler is cut short in its own context (what it records at
    its end is the call's), its upstream request closed, instead of all of it waiting for the
    server's stop. (A gRPC channel keeps such a call running; nothing here depends on that.)"""
    assert core.local is not None
    call: Any = pb_grpc.InferenceStub(channels["local"]).ChatStream(
        chat("fake-endless"), metadata=(("x-request-id", "req-dropped"),))
    assert (await call.read()).choices
    assert len(core.local._calls) == 1
    del call
    gc.collect()
    await asyncio.wait_for(upstream.disconnected.wait(), 2)
    await until(lambda: probe.seen)
    assert probe.seen[-1] == ("", "fake-endless", "req-dropped")
    assert not core.local._calls
    assert upstream.streams_finished == 0


@pytest.mark.parametrize("first", ["cancel", "deadline"])
async def test_the_first_reason_to_end_a_read_stands(core: CoreHandle, channels: Channels,
                                                     upstream: FakeOpenAI, first: str) -> None:
    """cancel() or the deadline, then the server's stop in the same step, while another task
    reads: the read ends for the first reason, and the reading task is not left cancelled."""
    assert core.local is not None
    upstream.slow_seconds = 5.0
    call = pb_grpc.InferenceStub(channels["local"]).ChatStream(chat("fake-slowstream"),
                                                               timeout=10)
    assert isinstance(call, LocalUnaryStreamCall)
    reader = await read_in_a_task(call, upstream)
    if first == "cancel":
        assert call.cancel()
    else:
        call._expire()  # what the deadline's timer calls
    await core.local.stop(None)  # its first step (stopping every call) in this same step
    got, cancelling = await asyncio.wait_for(reader, 2)
    assert cancelling == 0
    if first == "cancel":
        assert got == Outcome("CancelledError")
        assert await call.code() == grpc.StatusCode.CANCELLED
    else:
        assert got.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_a_handler_that_goes_on_is_cut_again(upstream: FakeOpenAI) -> None:
    """cancel() between reads, of a handler that swallows its cancellation and yields again:
    it is cancelled again (then closed), not left to run to its end, which the server's stop
    would wait for."""
    handle = await start_core(parse_config(base_config(upstream.base_url)), host="127.0.0.1",
                              port=0, extra_interceptors=[Swallow(go_on=True)])
    try:
        assert handle.local is not None
        call = await _stream_left_unread(handle.local_channel(), upstream, deadline=30)
        assert call.cancel()
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        started = time.monotonic()
        await handle.local.stop(None)  # waits for the handler to end
        assert time.monotonic() - started < 2  # not the handler's 5 s
        assert await call.code() == grpc.StatusCode.CANCELLED
    finally:
        await handle.stop(0)


class Plain(aio.ServerInterceptor):
    """An interceptor of grpc.aio's own kind that wraps stream behaviours with functools.wraps
    (which copies their attributes), counting the messages."""

    def __init__(self) -> None:
        self.messages = 0

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_stream is None:
            return handler
        inner = handler.unary_stream

        @functools.wraps(inner)
        async def counted(request: Any, context: Any) -> AsyncIterator[Any]:
            async for item in inner(request, context):
                self.messages += 1
                yield item

        return grpc.unary_stream_rpc_method_handler(
            counted, handler.request_deserializer, handler.response_serializer)


async def test_an_interceptor_wrapping_a_stream_is_not_skipped(upstream: FakeOpenAI) -> None:
    """The direct path past grpc.aio's wrapper layer is taken only from the layer that made it:
    a wrapper that copied it (functools.wraps) still runs, on both channels."""
    plain = Plain()
    handle = await start_core(parse_config(base_config(upstream.base_url)), host="127.0.0.1",
                              port=0, extra_interceptors=[plain, Probe()])
    real = aio.insecure_channel(f"127.0.0.1:{handle.port}")
    try:
        for ch in (real, handle.local_channel()):
            before = plain.messages
            got = await drain(pb_grpc.InferenceStub(ch).ChatStream(chat("mock-chat"), timeout=5))
            assert got and plain.messages - before == len(got)
    finally:
        await real.close()
        await handle.stop(0)


def _local_method(handler: Callable[..., AsyncIterator[Any]]) -> aio.Channel:
    """A local channel to a server of one stream method ``/t.S/M`` (no interceptors)."""
    server = LocalServer([])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "t.S", {"M": grpc.unary_stream_rpc_method_handler(handler)})])
    return server.channel()


async def test_a_stream_dropped_in_a_reference_cycle_is_cut_once() -> None:
    """Dropped as part of cyclic garbage (with its handler's generator): cut short once, in the
    handler's context, by the call's finalizer alone (not also by the generator's, which made
    two tasks drive one generator: 'aclose(): asynchronous generator is already running')."""
    who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="-")
    seen: list[tuple[str, str]] = []

    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        who.set("handler")
        try:
            yield 1
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0)  # a cleanup of several steps (closing an upstream response)
            await asyncio.sleep(0)
            raise
        finally:
            seen.append((who.get(), type(sys.exc_info()[1]).__name__))

    async def drop(ch: aio.Channel) -> None:
        method: Any = ch.unary_stream("/t.S/M")
        call = method(b"")
        await call.read()
        try:
            raise ValueError
        except ValueError as exc:
            kept = exc  # its traceback holds this frame, which holds the call: a cycle
            assert kept

    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    gc.disable()
    try:
        await drop(_local_method(handler))
        gc.collect()
        await until(lambda: seen)
        for _ in range(5):
            await asyncio.sleep(0.01)
        gc.collect()
    finally:
        gc.enable()
        loop.set_exception_handler(previous)
    assert seen == [("handler", "CancelledError")]
    assert errors == []


async def test_a_handler_that_never_waits_cleans_up_uncancelled() -> None:
    """cancel() between reads of a handler that yields without ever waiting: it is closed, and
    its cleanup runs to its end (no cancellation left over from cutting it short)."""
    seen: list[str] = []

    async def handler(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            for i in range(100):
                yield i
        finally:
            try:
                await asyncio.sleep(0)  # a cleanup that waits (closing an upstream response)
                seen.append("completed")
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

    method: Any = _local_method(handler).unary_stream("/t.S/M")
    call = method(b"")
    assert await call.read() == 0
    assert call.cancel()
    await until(lambda: seen)
    assert seen == ["completed"]
    assert await call.code() == grpc.StatusCode.CANCELLED
