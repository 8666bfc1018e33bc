"""The edge's two ways to the core (``CoreAPI``) side by side: the generated stubs over
``127.0.0.1:{core.port}`` and the core called in process. The same calls, against one core in front
of the fake upstream, end with the same status, details, ``igw-reason`` and messages; the deadline,
a caller that leaves and the core's stop reach the handler and its upstream on both."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from grpc import aio
from grpc_health.v1 import health_pb2

from gateway_common.asyncgen import delegate
from gateway_common.config import parse_config
from gateway_common.core_api import (
    CHAT,
    CHAT_STREAM,
    CREATE_TOKEN,
    HEALTH_CHECK,
    INFERENCE,
    REASON_KEY,
    UPSTREAM_SECONDS_KEY,
    CallOptions,
    CoreAPI,
    Metadata,
    ServerStream,
    Unary,
    trailer,
)
from gateway_common.core_grpc import GrpcCore
from gateway_core.errors import UpstreamTimeout
from gateway_core.interceptors import BehaviorInterceptor, StreamBehavior
from gateway_core.server import CoreHandle, start_core
from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import inference_pb2 as pb
from tests.auth.kit import auth_config, bearer, chat
from tests.conftest import base_config
from tests.fakes.openai_upstream import REPLY, FakeOpenAI

Apis = dict[str, CoreAPI]
Md = tuple[tuple[str, str], ...]
Work = Callable[[CoreAPI], Awaitable[Any]]
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
        reason = trailer(tuple(exc.trailing_metadata() or ()), REASON_KEY)
        return Outcome(exc.code(), exc.details(), reason)
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


async def drain(api: CoreAPI, rpc: ServerStream[Any, Any], request: Message, md: Md = (),
                seconds: float | None = 5) -> tuple[list[Any], Metadata]:
    """Every message of a stream, and its trailers."""
    stream = api.stream(rpc, request, CallOptions(seconds, md))
    async with stream as messages:
        got = [m async for m in messages]
    return got, stream.trailing_metadata()


def content(msg: Message) -> Message:
    """The message without what differs between two identical calls (id, created)."""
    out = type(msg)()
    out.CopyFrom(msg)
    for name in ("id", "created"):
        if name in out.DESCRIPTOR.fields_by_name:
            out.ClearField(name)
    return out


class Probe(BehaviorInterceptor):
    """Innermost interceptor: how many messages the streams have yielded."""

    def __init__(self) -> None:
        super().__init__()
        self.streamed = 0

    async def around_stream(self, method: str, behavior: StreamBehavior, request: Any,
                            context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with delegate(behavior(request, context)) as items:
            async for item in items:
                self.streamed += 1
                yield item


@pytest.fixture
def probe() -> Probe:
    return Probe()


async def started_core(upstream: FakeOpenAI, *extra: aio.ServerInterceptor) -> CoreHandle:
    return await start_core(parse_config(base_config(upstream.base_url)), host="127.0.0.1",
                            port=0, extra_interceptors=list(extra))


@pytest.fixture
async def core(upstream: FakeOpenAI, probe: Probe) -> AsyncIterator[CoreHandle]:
    handle = await started_core(upstream, probe)
    yield handle
    await handle.stop(0)


def both(handle: CoreHandle) -> Apis:
    assert handle.in_process is not None
    return {"grpc": GrpcCore(aio.insecure_channel(f"127.0.0.1:{handle.port}")),
            "in_process": handle.in_process}


@pytest.fixture
async def apis(core: CoreHandle) -> AsyncIterator[Apis]:
    found = both(core)
    yield found
    await found["grpc"].close()


async def on_both(apis: Apis, work: Work) -> dict[str, Outcome]:
    return {name: await outcome(work(api)) for name, api in apis.items()}


def unary_chat(request: pb.ChatRequest, md: Md = (), timeout: float = 5) -> Work:
    return lambda api: api.unary(CHAT, request, CallOptions(timeout, md))


def stream_chat(request: pb.ChatRequest, md: Md = (), timeout: float = 5) -> Work:
    return lambda api: drain(api, CHAT_STREAM, request, md, timeout)


async def test_unary_chat(apis: Apis) -> None:
    responses: dict[str, Message] = {}
    for name, api in apis.items():
        reply = await api.unary(CHAT, chat("fake-chat"), CallOptions(5))
        assert float(trailer(reply.trailing, UPSTREAM_SECONDS_KEY) or 0) > 0, name
        responses[name] = content(reply.message)
    assert responses["in_process"] == responses["grpc"]
    assert isinstance(responses["grpc"], pb.ChatResponse)
    assert responses["grpc"].choices[0].message.content == REPLY


async def test_chat_stream(apis: Apis, upstream: FakeOpenAI) -> None:
    chunks: dict[str, list[Message]] = {}
    for name, api in apis.items():
        # The mock provider sends one chunk per token: the sequences compare one to one.
        got, trailing = await drain(api, CHAT_STREAM, chat("mock-chat", LONG))
        chunks[name] = [content(c) for c in got]
        assert trailer(trailing, UPSTREAM_SECONDS_KEY) is not None, name
        # Through the fake upstream, events of one read are merged: compare the text.
        fake, _ = await drain(api, CHAT_STREAM, chat("fake-chat"))
        assert "".join(c.delta.content for f in fake for c in f.choices) == REPLY, name
        assert fake[-1].choices[0].finish_reason == "stop"
    assert chunks["in_process"] == chunks["grpc"]
    assert len(chunks["grpc"]) == LONG_CHUNKS
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
async def test_error_statuses(apis: Apis, request_: pb.ChatRequest, code: grpc.StatusCode,
                              reason: str) -> None:
    mid_stream = request_.model == "fake-miderror"  # a unary call of it succeeds
    for work in ([] if mid_stream else [unary_chat(request_)]) + [stream_chat(request_)]:
        outcomes = await on_both(apis, work)
        assert outcomes["in_process"] == outcomes["grpc"]
        assert (outcomes["grpc"].code, outcomes["grpc"].reason) == (code, reason)
        assert outcomes["grpc"].details


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_deadline_cancels_the_upstream(apis: Apis, upstream: FakeOpenAI,
                                             stream: bool) -> None:
    upstream.slow_seconds = 5.0  # the deadline, not the upstream, must end the call
    work = (stream_chat(chat("fake-slowstream"), timeout=0.3) if stream
            else unary_chat(chat("fake-slow"), timeout=0.3))
    codes = {}
    for name, api in apis.items():
        upstream.disconnected.clear()
        started = time.monotonic()
        got = await outcome(work(api))
        assert time.monotonic() - started < 2.5, name
        # Who notices first (the provider's timer or the call's) is a race on both transports:
        # either is a correct report of the same DEADLINE_EXCEEDED.
        assert got.reason in (None, "upstream_timeout") and "deadline" in str(got.details).lower()
        codes[name] = got.code
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0, name
    assert codes["in_process"] == codes["grpc"] == grpc.StatusCode.DEADLINE_EXCEEDED


async def test_leaving_a_stream_closes_the_upstream(apis: Apis, upstream: FakeOpenAI) -> None:
    """A caller that leaves after the first message (a client gone away) cancels the call."""
    for name, api in apis.items():
        upstream.disconnected.clear()
        async with api.stream(CHAT_STREAM, chat("fake-endless"), CallOptions(10)) as messages:
            async for first in messages:
                assert isinstance(first, pb.ChatChunk) and first.choices
                break
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        assert upstream.streams_finished == 0, name


async def test_a_cancelled_caller_cancels_the_handler(apis: Apis, upstream: FakeOpenAI) -> None:
    """The reading task is cancelled while it waits for the upstream: the read raises
    CancelledError and the upstream request is closed."""
    upstream.slow_seconds = 5.0
    for name, api in apis.items():
        upstream.disconnected.clear()
        upstream.requests.clear()
        reader = asyncio.ensure_future(drain(api, CHAT_STREAM, chat("fake-slowstream"),
                                             seconds=10))
        await until(lambda: any(r.body.get("model") == "slow-stream" for r in upstream.requests))
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        assert upstream.streams_finished == 0, name


async def _read_then_wait(api: CoreAPI, seconds: float, deadline: float) -> None:
    """Read one message of an endless stream, then spend ``seconds`` in the block (as an edge
    writing to a slow client) before reading on."""
    async with api.stream(CHAT_STREAM, chat("fake-endless"), CallOptions(deadline)) as messages:
        async for _ in messages:
            await asyncio.sleep(seconds)


async def test_deadline_between_reads_cancels_the_handler(apis: Apis,
                                                          upstream: FakeOpenAI) -> None:
    """The deadline passes while the caller is away from its reads: DEADLINE_EXCEEDED (in
    process at once, over gRPC at the next read), the upstream request closed, the caller's
    task not left cancelled."""
    for name, api in apis.items():
        upstream.disconnected.clear()
        got = await asyncio.wait_for(outcome(_read_then_wait(api, 1.0, deadline=0.3)), 3)
        assert got.code == grpc.StatusCode.DEADLINE_EXCEEDED, name
        assert "Deadline Exceeded" in str(got.details), name
        await asyncio.wait_for(upstream.disconnected.wait(), 2)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0, name
    assert upstream.streams_finished == 0


async def test_stop_between_reads_ends_the_call(core: CoreHandle, apis: Apis,
                                                upstream: FakeOpenAI) -> None:
    """The core stops while an in-process caller is away from its reads: after the grace the
    call ends UNAVAILABLE, as gRPC's does, and the upstream request is closed."""
    assert core.in_process is not None
    reader = asyncio.ensure_future(outcome(_read_then_wait(apis["in_process"], 30, 10)))
    await until(lambda: any(r.body.get("model") == "endless" for r in upstream.requests))
    started = time.monotonic()
    await core.in_process.stop(0.2)  # returns once the handler has ended (after the grace)
    assert 0.15 < time.monotonic() - started < 2.5
    got = await asyncio.wait_for(reader, 2)
    assert (got.code, got.details) == (grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")
    await asyncio.wait_for(upstream.disconnected.wait(), 2)


async def test_unknown_method_is_unimplemented(apis: Apis) -> None:
    """A method the core does not serve (an edge newer than its core): as the gRPC port says.
    (The stubs only know the proto's methods: the gRPC side is called on the channel.)"""
    grpc_api = apis["grpc"]
    assert isinstance(grpc_api, GrpcCore)
    unary: Unary[pb.ChatRequest, pb.ChatResponse] = Unary(INFERENCE, "Nope", pb.ChatResponse)
    stream: ServerStream[pb.ChatRequest, pb.ChatChunk] = ServerStream(INFERENCE, "NopeStream", pb.ChatChunk)
    raw_unary = grpc_api.channel.unary_unary(
        unary.path, request_serializer=pb.ChatRequest.SerializeToString,
        response_deserializer=pb.ChatResponse.FromString)
    raw_stream = grpc_api.channel.unary_stream(
        stream.path, request_serializer=pb.ChatRequest.SerializeToString,
        response_deserializer=pb.ChatChunk.FromString)
    api = apis["in_process"]
    for remote, local in ((raw_unary(chat("x"), timeout=5),
                           api.unary(unary, chat("x"), CallOptions(5))),
                          (_read_all(raw_stream(chat("x"), timeout=5)),
                           drain(api, stream, chat("x")))):
        remote_outcome = await outcome(remote)
        assert remote_outcome.code == grpc.StatusCode.UNIMPLEMENTED
        assert await outcome(local) == remote_outcome


async def _read_all(call: aio.UnaryStreamCall[Any, Any]) -> list[Any]:
    return [m async for m in call]


async def test_health(apis: Apis) -> None:
    statuses = {}
    for name, api in apis.items():
        reply = await api.unary(HEALTH_CHECK, health_pb2.HealthCheckRequest(service=""),
                                CallOptions(2))
        statuses[name] = reply.message.status
    assert statuses["in_process"] == statuses["grpc"] == health_pb2.HealthCheckResponse.SERVING
    missing = await on_both(apis, lambda api: api.unary(
        HEALTH_CHECK, health_pb2.HealthCheckRequest(service="no.Such"), CallOptions(2)))
    assert missing["in_process"] == missing["grpc"]
    assert missing["grpc"].code == grpc.StatusCode.NOT_FOUND


async def test_auth_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
    core = await start_core(parse_config(auth_config(tmp_path / "data")), host="127.0.0.1",
                            port=0)
    apis = both(core)
    try:
        assert core.auth is not None and core.auth.bootstrap.admin_secret is not None
        created = await apis["in_process"].unary(
            CREATE_TOKEN, apb.CreateTokenRequest(name="chat only", models=["mock-chat"]),
            CallOptions(5, bearer(core.auth.bootstrap.admin_secret)))
        chat_only = bearer(created.message.secret)
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
                outcomes = await on_both(apis, work)
                assert outcomes["in_process"] == outcomes["grpc"]
                assert (outcomes["grpc"].code, outcomes["grpc"].reason) == (code, reason)
    finally:
        await apis["grpc"].close()
        await core.stop(0)


async def _stop_during_slow_call(api: CoreAPI, stop: Callable[[float], Awaitable[None]],
                                 upstream: FakeOpenAI, stream: bool = False
                                 ) -> tuple[Outcome, float]:
    """Stop with a 0.2 s grace while a slow call (5 s upstream) runs: how it ended, and when."""
    upstream.slow_seconds = 5.0
    call = (drain(api, CHAT_STREAM, chat("fake-slow"), seconds=10) if stream
            else api.unary(CHAT, chat("fake-slow"), CallOptions(10)))
    asked = sum(r.body.get("model") == "slow" for r in upstream.requests)
    waiter = asyncio.ensure_future(outcome(call))
    await until(lambda: sum(r.body.get("model") == "slow" for r in upstream.requests) > asked)
    started = time.monotonic()
    await stop(0.2)
    return await asyncio.wait_for(waiter, 3), time.monotonic() - started


async def test_stop(core: CoreHandle, apis: Apis, upstream: FakeOpenAI) -> None:
    """In-flight calls get the grace, then end UNAVAILABLE (their upstream closed); new calls
    are refused UNAVAILABLE, as by the stopped gRPC port."""
    assert core.in_process is not None
    api = apis["in_process"]
    upstream.token_delay = 0.002  # a stream of about 0.03 s: it ends within the grace
    calm = asyncio.ensure_future(outcome(drain(api, CHAT_STREAM, chat("fake-chat"))))
    _, elapsed = await _stop_during_slow_call(api, core.in_process.stop, upstream)
    assert 0.15 < elapsed < 2.5  # the slow call is cancelled when the grace passes ...
    await asyncio.wait_for(upstream.disconnected.wait(), 2)  # ... and so is its upstream request
    assert (await calm).code == grpc.StatusCode.OK
    assert upstream.streams_finished == 1
    await core.stop(0)
    remote = await outcome(unary_chat(chat("mock-chat"), timeout=2)(apis["grpc"]))
    assert remote.code == grpc.StatusCode.UNAVAILABLE
    assert (await outcome(unary_chat(chat("mock-chat"))(api))).code == remote.code
    assert (await outcome(stream_chat(chat("mock-chat"))(api))).code == remote.code


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
async def test_stop_ends_a_running_call_as_grpc_does(core: CoreHandle, apis: Apis,
                                                     upstream: FakeOpenAI, stream: bool) -> None:
    assert core.in_process is not None
    remote, _ = await _stop_during_slow_call(apis["grpc"], core.server.stop, upstream, stream)
    local, elapsed = await _stop_during_slow_call(apis["in_process"], core.in_process.stop,
                                                  upstream, stream)
    assert elapsed < 2.5
    assert remote.code == grpc.StatusCode.UNAVAILABLE
    assert (local.code, local.details) == (remote.code, remote.details)


async def test_stream_runs_as_its_reader_reads(apis: Apis, probe: Probe) -> None:
    """In process, the stream's handler runs as far as its caller reads, one message per read."""
    api = apis["in_process"]
    read: list[Any] = []
    async with api.stream(CHAT_STREAM, chat("mock-chat", LONG), CallOptions(5)) as messages:
        assert probe.streamed == 0  # not started before the first read
        async for message in messages:
            read.append(message)
            # The mock has no delay: a handler running ahead would show here.
            assert probe.streamed == len(read)
    real, _ = await drain(apis["grpc"], CHAT_STREAM, chat("mock-chat", LONG))
    assert [content(c) for c in read] == [content(c) for c in real]
    assert len(read) == LONG_CHUNKS


async def test_upstream_seconds_exclude_the_readers_time(apis: Apis,
                                                         upstream: FakeOpenAI) -> None:
    """``igw-upstream-seconds`` times the upstream, not how slowly the caller takes the messages
    (the edge's overhead figure is its time minus that)."""
    upstream.token_delay = 0.002  # about one event per network read: a message each
    measured = {}
    for name, api in apis.items():
        stream = api.stream(CHAT_STREAM, chat("fake-chat"), CallOptions(10))
        messages = 0
        async with stream as reading:
            async for _ in reading:
                messages += 1
                await asyncio.sleep(0.1)  # as an edge writing to a slow client
        seconds = float(trailer(stream.trailing_metadata(), UPSTREAM_SECONDS_KEY) or "nan")
        measured[name] = (messages, seconds)
    # The reader spent messages x 0.1 s (the in-process handler waits for it: what arrived
    # meanwhile comes as one message); the upstream answers in a fraction of that.
    assert measured["in_process"][0] >= 2, measured
    assert measured["in_process"][1] < 0.1 * measured["in_process"][0] / 2, measured
    assert measured["in_process"][1] < measured["grpc"][1] + 0.1, measured


class Swallow(BehaviorInterceptor):
    """A handler that does not let its cancellation through: it ends its stream quietly, or
    (``go_on``) sends one more message and goes on waiting."""

    def __init__(self, go_on: bool = False) -> None:
        super().__init__()
        self.go_on = go_on

    async def around_stream(self, method: str, behavior: StreamBehavior, request: Any,
                            context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async with delegate(behavior(request, context)) as items:
                async for item in items:
                    yield item
        except asyncio.CancelledError:
            if self.go_on:
                yield pb.ChatChunk()
                await asyncio.sleep(5)


@pytest.mark.parametrize("go_on", [False, True], ids=["ends", "goes-on"])
async def test_a_handler_that_swallows_its_cancellation(upstream: FakeOpenAI,
                                                        go_on: bool) -> None:
    """The deadline still ends the call with DEADLINE_EXCEEDED (not a stream that looks
    complete), promptly, and leaves the reading task uncancelled."""
    handle = await started_core(upstream, Swallow(go_on))
    apis = both(handle)
    upstream.slow_seconds = 5.0
    try:
        for name, api in apis.items():
            started = time.monotonic()
            got = await outcome(drain(api, CHAT_STREAM, chat("fake-slowstream"), seconds=0.3))
            assert got.code == grpc.StatusCode.DEADLINE_EXCEEDED, name
            assert time.monotonic() - started < 2.5, name
            task = asyncio.current_task()
            assert task is not None and task.cancelling() == 0, name
    finally:
        await apis["grpc"].close()
        await handle.stop(0)


HELD: ContextVar[str] = ContextVar("held", default="-")


class Holding(BehaviorInterceptor):
    """Ordinary async code around a stream: an ``asyncio.timeout`` (an idle timer, reported as
    an upstream timeout), a lock and a context variable, all held across its yields."""

    def __init__(self, idle: float) -> None:
        super().__init__()
        self.idle = idle
        self.lock = asyncio.Lock()
        self.seen: list[str] = []

    async def around_stream(self, method: str, behavior: StreamBehavior, request: Any,
                            context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        token = HELD.set("handler")
        try:
            async with self.lock, asyncio.timeout(self.idle) as idle, \
                    delegate(behavior(request, context)) as items:
                async for item in items:
                    yield item
                    self.seen.append(HELD.get())
                    idle.reschedule(asyncio.get_running_loop().time() + self.idle)
        except TimeoutError:
            raise UpstreamTimeout("the stream was idle too long") from None
        finally:
            HELD.reset(token)


async def test_a_handler_holds_a_timeout_a_lock_and_a_variable_across_yields(
        upstream: FakeOpenAI) -> None:
    holding = Holding(idle=0.3)
    handle = await started_core(upstream, holding)
    apis = both(handle)
    try:
        for name, api in apis.items():
            # Read promptly: the stream completes, the lock is released, the variable held.
            got, _ = await drain(api, CHAT_STREAM, chat("mock-chat", LONG))
            assert len(got) == LONG_CHUNKS and not holding.lock.locked(), name
            assert set(holding.seen) == {"handler"}, name
            # Leave early: the lock is released all the same.
            async with api.stream(CHAT_STREAM, chat("mock-chat"), CallOptions(5)) as messages:
                async for _ in messages:
                    break
            await until(lambda: not holding.lock.locked())
        # A reader slower than the handler's idle timer, in process, where the handler waits for
        # its reader (over gRPC it runs ahead, into the flow-control window): the handler's own
        # timeout fires in the task they share, and the call ends with what the handler made
        # of it, the reader's task not left cancelled.
        got_slow = await asyncio.wait_for(outcome(_read_slowly(apis["in_process"], 1.0)), 3)
        assert (got_slow.code, got_slow.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED,
                                                    "upstream_timeout")
        assert not holding.lock.locked()
        assert HELD.get() == "-"
    finally:
        await apis["grpc"].close()
        await handle.stop(0)


async def _read_slowly(api: CoreAPI, pause: float) -> None:
    async with api.stream(CHAT_STREAM, chat("mock-chat", LONG), CallOptions(5)) as messages:
        async for _ in messages:
            await asyncio.sleep(pause)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


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
    a wrapper that copied it (functools.wraps) still runs, on both transports."""
    plain = Plain()
    handle = await started_core(upstream, plain, Probe())
    apis = both(handle)
    try:
        for api in apis.values():
            before = plain.messages
            got, _ = await drain(api, CHAT_STREAM, chat("mock-chat"))
            assert got and plain.messages - before == len(got)
    finally:
        await apis["grpc"].close()
        await handle.stop(0)
