"""An in-process channel to the core, for an edge running in the same process (``serve``).

The edge's generated stubs take any ``grpc.aio.Channel``; this one hands each call to the core's
own method handlers, through the same server interceptors (metrics, errors, auth, usage) in the
same order, with gRPC's semantics: a deadline that cancels the handler and ends the call with
DEADLINE_EXCEEDED, cancellation that reaches the handler (and so the upstream), status, details
and trailing metadata from ``context.abort``, ``AioRpcError`` on failure. What it leaves out is the
transport: no HTTP/2 framing, no serialization, no completion-queue thread and no cross-thread
wake-up per message, which on a small machine cost more than everything else the gateway does
(``benchmarks/grpc_floor.py``). Nor a task hop per message: a server stream's handler runs in the
task that reads it (``LocalUnaryStreamCall``).

Messages are handed over, not copied: a request belongs to the handler once sent, and a response
to the caller once received (neither side touches a message after passing it on). Not reproduced:
gRPC's message size limits and its metadata validation (the edge sends bounded bodies and printable
ASCII metadata). The gRPC port is still served for internal callers; ``listen.core_transport:
grpc`` makes the edge use it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Sequence,
)
from typing import Any, NamedTuple, NoReturn, TypeAlias

import grpc
from grpc import aio

log = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the type stubs only
MetadataLike = aio.Metadata | Sequence[tuple[str, str | bytes]] | None

_EMPTY = aio.Metadata()

# A server-stream behaviour's attribute: (the behaviour itself, the function that returns its
# messages directly), set by ``interceptors.BehaviorInterceptor`` on the async generator function
# grpc.aio needs (which only iterates that function and yields again). The behaviour is named so
# that a wrapper copying the attribute (``functools.wraps``) is not taken for what it wraps.
DIRECT_STREAM = "direct_stream"


def direct_stream(behavior: Any) -> Any:
    """The function giving ``behavior``'s messages without its grpc.aio layer, if it has one."""
    declared = getattr(behavior, DIRECT_STREAM, None)
    if declared is not None and declared[0] is behavior:
        return declared[1]
    return behavior


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class LocalServer:
    """Collects the core's handlers (registered beside the real server's) and its interceptors."""

    def __init__(self, interceptors: Sequence[aio.ServerInterceptor]) -> None:
        self._interceptors = tuple(interceptors)
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, Handler] = {}

        async def lookup(details: grpc.HandlerCallDetails) -> Handler | None:
            return self._lookup(details)

        # The interceptor chain, built once (each interceptor keeps its own per-method cache).
        entry: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]] = lookup
        for interceptor in reversed(self._interceptors):
            entry = _chain(interceptor, entry)
        self._entry = entry
        self._stopped = False
        # Held weakly: a stream its caller dropped unread goes, as grpc.aio's call does (a unary
        # call's task holds it while it runs; a stream's deadline timer, until the deadline).
        self._calls: weakref.WeakSet[_LocalCall] = weakref.WeakSet()

    async def stop(self, grace: float | None) -> None:
        """As the gRPC server's stop: refuse new calls, give running ones ``grace`` seconds (None
        or 0: none), then end what is left with UNAVAILABLE."""
        self._stopped = True
        await _end_calls(list(self._calls), grace, stopping=True)

    # The two registration calls generated ``add_*Servicer_to_server`` functions make.
    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler

    def _lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        found = self._registered.get(details.method)
        if found is not None:
            return found
        for generic in self._generic:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    async def handler_for(self, method: str, metadata: tuple[tuple[str, str | bytes], ...]
                          ) -> Handler | None:
        """The handler for one call, through the interceptor chain (outermost first)."""
        return await self._entry(_CallDetails(method, metadata))  # type: ignore[arg-type]

    def channel(self) -> LocalChannel:
        return LocalChannel(self)


def _chain(
    interceptor: aio.ServerInterceptor,
    continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
) -> Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]:
    async def step(details: grpc.HandlerCallDetails) -> Handler | None:
        return await interceptor.intercept_service(continuation, details)

    return step


def _metadata_tuple(metadata: MetadataLike) -> tuple[tuple[str, str | bytes], ...]:
    if not metadata:
        return ()
    if type(metadata) is tuple:  # what the edge sends: already a tuple of pairs
        return metadata
    return tuple((key, value) for key, value in metadata)


class LocalContext(aio.ServicerContext[Any, Any]):
    """The servicer's view of a local call: the subset of gRPC's context a handler may use."""

    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...], deadline: float | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._metadata = metadata
        self._deadline = deadline
        self._loop = loop
        self._code: grpc.StatusCode | None = None
        self._details: str | None = None
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self._done = False
        self._callbacks: list[Callable[[Any], None]] = []

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: MetadataLike = ()) -> NoReturn:
        if code == grpc.StatusCode.OK:
            log.error("abort() called with StatusCode.OK; returning UNKNOWN")
            code = grpc.StatusCode.UNKNOWN
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = _metadata_tuple(trailing_metadata)
        raise aio.AbortError()

    async def abort_with_status(self, status: Any) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:  # type: ignore[override]
        return self._metadata

    def time_remaining(self) -> float | None:  # type: ignore[override]  # grpc: None, no deadline
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - self._loop.time())

    def set_trailing_metadata(self, trailing_metadata: MetadataLike) -> None:
        self._trailing = _metadata_tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:  # type: ignore[override]
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:  # type: ignore[override]
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str | None:  # type: ignore[override]
        return self._details

    def peer(self) -> str:
        return "local"

    def peer_identities(self) -> None:
        return None

    def peer_identity_key(self) -> None:
        return None

    def auth_context(self) -> dict[str, Any]:
        return {}

    def set_compression(self, compression: grpc.Compression) -> None:
        return None

    def disable_next_message_compression(self) -> None:
        return None

    async def send_initial_metadata(self, initial_metadata: MetadataLike) -> None:
        return None

    async def read(self) -> NoReturn:
        raise RuntimeError("context.read() is not served on the local channel")

    async def write(self, message: Any) -> NoReturn:
        raise RuntimeError("context.write() is not served on the local channel")

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def cancelled(self) -> bool:
        return self._done and self._code == grpc.StatusCode.CANCELLED

    def done(self) -> bool:
        return self._done

    def _finish(self) -> None:
        self._done = True
        for callback in self._callbacks:
            try:
                callback(self)
            except Exception:  # a callback's failure is its own, as in grpc
                log.exception("done callback of a local call failed")


def _rpc_error(code: grpc.StatusCode, details: str | None,
               trailing: tuple[tuple[str, str | bytes], ...] = ()) -> aio.AioRpcError:
    return aio.AioRpcError(code, _EMPTY, aio.Metadata(*trailing) if trailing else _EMPTY, details)


def _error_of(ctx: LocalContext, exc: BaseException | None) -> aio.AioRpcError:
    """The error a caller sees when the handler ended with ``exc`` (None: it returned)."""
    if isinstance(exc, aio.AbortError) or exc is None:
        return _rpc_error(ctx._code or grpc.StatusCode.UNKNOWN, ctx._details, ctx._trailing)
    if isinstance(exc, TimeoutError):
        return _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    # What grpc.aio reports for an exception that escapes a handler (ours never let one escape).
    log.error("unhandled exception in a local call", exc_info=exc)
    return _rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")


async def _end_calls(calls: list[_LocalCall], grace: float | None, *, stopping: bool) -> None:
    running = [c._finished() for c in calls if not c._over()]
    if running and grace:
        await asyncio.wait(running, timeout=grace)
    for call in calls:
        if stopping:
            call._stop()  # the caller sees UNAVAILABLE, as from a stopping gRPC server
        else:
            call.cancel()
    if running:
        await asyncio.wait(running)


class _Ended(Exception):
    """The call ended before its handler ran (no such method)."""

    def __init__(self, error: aio.AioRpcError) -> None:
        self.error = error


def _stopped() -> _Ended:
    """What a call still running when the server stops ends with (gRPC's own words)."""
    return _Ended(_rpc_error(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls"))


def _expired() -> _Ended:
    return _Ended(_rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))


_CALLER = _Ended(_rpc_error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!"))


class _LocalCall:
    """What every local call shares: context, handler lookup, and the outcome."""

    def __init__(self, channel: LocalChannel, method: str, timeout: float | None,
                 metadata: MetadataLike) -> None:
        self._channel = channel
        self._server = channel._server
        self._method = method
        self._loop = asyncio.get_running_loop()
        self._deadline = None if timeout is None else self._loop.time() + timeout
        self._ctx = LocalContext(_metadata_tuple(metadata), self._deadline, self._loop)
        self._status: grpc.StatusCode | None = None
        self._error: aio.AioRpcError | None = None
        self._stopping = False  # cancelled by the server's stop, not by the caller
        self._cancel_requested = False  # cancel() was called while the call ran

    # ---- what the server's stop and the channel's close need of every call ----

    def _over(self) -> bool:
        """The handler has finished (not only: the outcome is known)."""
        raise NotImplementedError

    def _finished(self) -> asyncio.Future[Any]:
        """Done when the handler has finished."""
        raise NotImplementedError

    def _stop(self) -> None:
        """End the call with UNAVAILABLE, as a stopping gRPC server does."""
        raise NotImplementedError

    def cancel(self) -> bool:
        raise NotImplementedError

    async def _handler(self, kind: str) -> Any:
        """The behaviour of the method's handler of ``kind`` ("unary_unary", ...)."""
        if self._server._stopped:
            raise _Ended(_rpc_error(grpc.StatusCode.UNAVAILABLE, "the core is shutting down"))
        handler = await self._server.handler_for(self._method, self._ctx._metadata)
        if handler is None:
            raise _Ended(_rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!"))
        behavior = getattr(handler, kind)
        if behavior is None:
            raise _Ended(_rpc_error(grpc.StatusCode.UNIMPLEMENTED,
                                    f"{self._method} is not a {kind} method"))
        return behavior

    def _settle(self, exc: BaseException | None) -> aio.AioRpcError | None:
        """Record how the handler ended (``exc``: what it raised, None: it returned)."""
        error: aio.AioRpcError | None
        if isinstance(exc, _Ended):
            error = exc.error
        elif exc is None and self._ctx._code in (None, grpc.StatusCode.OK):
            error = None
        else:
            error = _error_of(self._ctx, exc)
        self._error = error
        self._status = grpc.StatusCode.OK if error is None else error.code()
        self._ctx._code = self._status
        self._ctx._finish()
        return error

    def _cancelled(self) -> None:
        self._status = self._ctx._code = grpc.StatusCode.CANCELLED
        self._ctx._finish()

    # ---- the call's surface (grpc.aio.Call) ----

    def cancelled(self) -> bool:
        return self._cancel_requested or self._status == grpc.StatusCode.CANCELLED

    def time_remaining(self) -> float | None:
        return self._ctx.time_remaining()

    async def initial_metadata(self) -> aio.Metadata:
        return _EMPTY

    async def _settled(self) -> None:
        """Wait for the outcome."""
        raise NotImplementedError

    async def trailing_metadata(self) -> aio.Metadata:
        await self._settled()
        trailing = self._ctx._trailing
        return aio.Metadata(*trailing) if trailing else _EMPTY

    async def code(self) -> grpc.StatusCode:
        await self._settled()
        return self._status or grpc.StatusCode.CANCELLED

    async def details(self) -> str:
        await self._settled()
        if self._error is not None:
            return self._error.details() or ""
        return "Locally cancelled by application!" if self.cancelled() else ""

    async def wait_for_connection(self) -> None:
        return None


async def _with_deadline(deadline: float | None, work: Awaitable[Any]) -> Any:
    if deadline is None:
        return await work
    async with asyncio.timeout_at(deadline):
        return await work


class _AnsweredCall(_LocalCall):
    """A call whose handler answers once (unary-unary, stream-unary), in a task of its own (as
    gRPC starts it, whether or not the caller awaits it): awaiting the call gives the answer."""

    _task: asyncio.Task[Any]

    def _start(self, coro: Awaitable[Any]) -> None:
        # A context of its own, as a server's handler has: the core's context variables (caller
        # identity, model) never leak into the edge's request, nor the edge's into the core.
        self._task = self._loop.create_task(coro, context=contextvars.Context())  # type: ignore[arg-type]
        self._server._calls.add(self)
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._server._calls.discard(self)
        if self._status is None:  # cancelled before the handler's first step
            if self._stopping:
                self._settle(_stopped())
            else:
                self._cancelled()

    def _over(self) -> bool:
        return self._task.done()

    def _finished(self) -> asyncio.Future[Any]:
        return self._task

    def _stop(self) -> None:
        if not self._task.done():
            self._stopping = True
            self._task.cancel()

    async def _respond(self, kind: str, argument: Any) -> Any:
        try:
            behavior = await self._handler(kind)
            response = await _with_deadline(self._deadline, behavior(argument, self._ctx))
        except asyncio.CancelledError:
            if not self._stopping:
                self._cancelled()
                raise
            error = self._settle(_stopped())
        except BaseException as exc:
            error = self._settle(exc)
        else:
            error = self._settle(None)
        if error is not None:
            raise error
        return response

    async def _result(self) -> Any:
        """The task's response; UNAVAILABLE when the server's stop cut it short."""
        try:
            return await self._task
        except asyncio.CancelledError:
            if self._stopping and self._error is not None and not _cancelling():
                raise self._error from None
            raise

    def __await__(self) -> Any:
        return self._result().__await__()

    def cancel(self) -> bool:
        if self._task.done():
            return False
        self._cancel_requested = True
        return self._task.cancel()

    def done(self) -> bool:
        return self._task.done()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._task.add_done_callback(lambda _task: callback(self))

    async def _settled(self) -> None:
        if not self._task.done():
            await asyncio.wait((self._task,))


def _cancelling() -> int:
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


class LocalUnaryUnaryCall(_AnsweredCall, aio.UnaryUnaryCall[Any, Any]):
    def __init__(self, channel: LocalChannel, method: str, request: Any, timeout: float | None,
                 metadata: MetadataLike) -> None:
        super().__init__(channel, method, timeout, metadata)
        self._start(self._respond("unary_unary", request))


class LocalStreamUnaryCall(_AnsweredCall, aio.StreamUnaryCall[Any, Any]):
    def __init__(self, channel: LocalChannel, method: str, requests: Any, timeout: float | None,
                 metadata: MetadataLike) -> None:
        super().__init__(channel, method, timeout, metadata)
        self._start(self._respond("stream_unary", _as_async_iterator(requests)))

    async def write(self, request: Any) -> NoReturn:
        raise RuntimeError("local stream-unary calls take a request iterator")

    async def done_writing(self) -> None:
        return None


async def _as_async_iterator(requests: Any) -> AsyncIterator[Any]:
    if isinstance(requests, AsyncIterable):
        async for item in requests:
            yield item
    else:
        for item in requests:
            yield item


class _InContext:
    """Awaits ``coro`` with each of its steps run in ``context``: the handler's context variables
    stay its own, as in a task of its own, while it runs in the awaiting task."""

    __slots__ = ("_context", "_coro")

    def __init__(self, context: contextvars.Context, coro: Any) -> None:
        self._context = context
        self._coro = coro

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self._context.run
        send = self._coro.send
        throw = self._coro.throw
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                signal = run(send, value) if error is None else run(throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                value = yield signal
                error = None
            except BaseException as exc:  # what the awaiting task is told (a cancellation)
                value, error = None, exc


# How many times a handler that swallows its cancellation and yields again is cancelled again,
# before it is closed where it yields.
_CUT_ATTEMPTS = 4
# Streams dropped by their callers, being cut short (a task must be held while it runs).
_DROPPED: set[asyncio.Task[None]] = set()
# The handlers' generators of the streams that have started and not ended: held here, not only by
# their calls, so that a call that is dropped (even as part of a reference cycle) is cut short by
# its own finalizer alone, never also by the interpreter's finalizer of the generator.
_LIVE: set[AsyncIterator[Any]] = set()


def _dropped(loop: asyncio.AbstractEventLoop, messages: AsyncIterator[Any],
             context: contextvars.Context, ctx: LocalContext) -> None:
    """Cut short, on its loop, the handler of a stream its caller dropped between reads."""
    ctx._code = grpc.StatusCode.CANCELLED
    ctx._finish()
    task = loop.create_task(_cut_short(messages), context=context)
    _DROPPED.add(task)
    task.add_done_callback(_DROPPED.discard)


async def _cut_short(messages: AsyncIterator[Any]) -> None:
    """Run a handler's stream on to its next pause, and cancel it there: what cancelling the
    handler's task does, for a handler that waits (between reads) in no task."""
    task = asyncio.current_task()
    assert task is not None
    try:
        for _ in range(_CUT_ATTEMPTS):
            task.cancel()  # raised where the handler next waits, through all its layers
            await messages.__anext__()  # a message: it swallowed the cancellation, or never waited
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)  # a cancellation still pending is taken here, not in its cleanup
        aclose = getattr(messages, "aclose", None)  # an async generator's (every handler's)
        if aclose is not None:
            await aclose()  # GeneratorExit where it yields
    except (asyncio.CancelledError, StopAsyncIteration, aio.AbortError):
        pass
    except Exception:  # as grpc.aio does with what escapes a handler
        log.exception("a local stream's handler failed while it was being cancelled")


class LocalUnaryStreamCall(_LocalCall, aio.UnaryStreamCall[Any, Any]):
    """A server stream whose handler runs in its reader's task, a message per read.

    No task of its own and no hand-over between tasks: the reader's task resumes the handler's
    async generator (in the handler's own context variables) until it yields the next message, so
    a message costs one task wake-up, not two. The handler runs no further ahead than the reader
    reads (gRPC lets it buffer; here its upstream is read only as fast as the caller takes the
    messages). What a task of its own would give is kept: the deadline and the server's stop
    cancel the handler where it waits, in a read (the reader's task, the cancellation then
    reported as DEADLINE_EXCEEDED or UNAVAILABLE) or between reads (a short task takes the handler
    to its next pause and cancels it there); cancel() does the same. What ends a read is decided
    by who cancelled the reader's task, whatever the handler made of the cancellation (swallowed
    it, or raised an error of its own); the first reason to end the call stands.

    For handlers, one rule follows: nothing tied to the current task (``asyncio.timeout``) may
    span a ``yield``, since between two reads the task is the caller's. A handler that times its
    upstream stops the clock at its yields (``providers.http.stream_sse_batches``): the caller's
    time to pass a message on is not the upstream's.
    """

    def __init__(self, channel: LocalChannel, method: str, request: Any, timeout: float | None,
                 metadata: MetadataLike) -> None:
        super().__init__(channel, method, timeout, metadata)
        self._request = request
        self._vars = contextvars.Context()  # the handler's context variables, as in gRPC
        self._messages: AsyncIterator[Any] | None = None  # the handler's, from the first read
        self._reader: asyncio.Task[Any] | None = None  # the task in read(), while it reads
        self._cut: _Ended | None = None  # why the call was cut short while being read
        self._closing: asyncio.Task[None] | None = None  # cutting the handler between reads
        self._callbacks: list[Callable[[Any], None]] = []
        self._waiter: asyncio.Future[None] | None = None  # the handler has ended (stop, close)
        self._known: asyncio.Future[None] | None = None  # the outcome is known (code())
        self._timer = (None if self._deadline is None
                       else self._loop.call_at(self._deadline, self._expire))
        self._server._calls.add(self)

    # ---- reading ----

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        item = await self.read()
        if item is aio.EOF:
            raise StopAsyncIteration
        return item

    async def _first(self) -> Any:
        behavior = await self._handler("unary_stream")
        self._messages = messages = direct_stream(behavior)(self._request, self._ctx)
        _LIVE.add(messages)
        return await messages.__anext__()

    async def read(self) -> Any:
        if self._cancel_requested:
            raise asyncio.CancelledError
        if self._status is not None:
            return self._outcome()
        if self._reader is not None:
            raise aio.UsageError("another read of this call is in progress")
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._reader = task
        step = self._first() if self._messages is None else self._messages.__anext__()
        item: Any = None
        ended = False  # the handler's stream has ended (returned or raised)
        error: BaseException | None = None
        try:
            item = await _InContext(self._vars, step)
        except StopAsyncIteration:
            ended = True
        except (KeyboardInterrupt, SystemExit, GeneratorExit):  # not the call's to report
            self._end_cancelled()
            raise
        except BaseException as exc:  # what the handler raised, or a cancellation
            ended, error = True, exc
        finally:
            self._reader = None
        # Decided by who cancelled the reader's task, not by what the handler made of it (it may
        # have swallowed a cancellation, or turned it into an error of its own).
        cut = self._cut
        if cut is not None and task.cancelling() > cancelling:
            task.uncancel()  # ours: the deadline, the server's stop or cancel()
        # The reader's own task was cancelled (or the handler raised a cancellation of its own).
        own = (task.cancelling() > cancelling
               or (cut is None and isinstance(error, asyncio.CancelledError)))
        if (own or cut is not None) and not ended:
            self._close()  # it went on after the cancellation: cut it at its next pause
        if own:
            self._cancel_requested = True
            self._end_cancelled()
            if isinstance(error, asyncio.CancelledError):
                raise error
            raise asyncio.CancelledError
        if cut is _CALLER:  # cancel(): the read raises, as gRPC's does
            self._end_cancelled()
            raise asyncio.CancelledError
        if cut is not None:  # the deadline or the server's stop
            self._end(cut)
            return self._outcome()
        if ended:
            self._end(error)
            return self._outcome()
        return item

    def _outcome(self) -> Any:
        """What a read gives once the call has ended."""
        if self._error is not None:
            raise self._error
        if self._status == grpc.StatusCode.CANCELLED:
            raise asyncio.CancelledError
        return aio.EOF

    # ---- ending ----

    def _end(self, exc: BaseException | None) -> None:
        self._settle(exc)
        self._end_callbacks()

    def _end_cancelled(self) -> None:
        self._cancelled()
        self._end_callbacks()

    def _end_callbacks(self) -> None:
        if self._messages is not None:
            _LIVE.discard(self._messages)  # ended, or its cutting short holds it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._closing is None:
            self._server._calls.discard(self)
            self._wake()
        if self._known is not None and not self._known.done():
            self._known.set_result(None)
        for callback in self._callbacks:
            self._loop.call_soon(callback, self)
        self._callbacks.clear()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _close(self) -> None:
        """Cut the handler short where it waits between reads (it has started and not ended)."""
        if self._messages is not None and self._closing is None:
            self._closing = self._loop.create_task(_cut_short(self._messages),
                                                   context=self._vars)
            self._closing.add_done_callback(self._closed)

    def _closed(self, _task: asyncio.Task[None]) -> None:
        self._server._calls.discard(self)
        self._wake()

    def _interrupt(self, why: _Ended) -> bool:
        """End a running call, for ``why`` (``_CALLER``: cancel())."""
        if self._status is not None:
            return False
        if self._reader is not None:  # the handler runs in a read: cancel it there
            if self._cut is not None:  # already cut: the first reason stands
                return False
            self._cut = why
            self._reader.cancel()
            return True
        self._close()  # first: the call is over only once its handler is
        if why is _CALLER:
            self._end_cancelled()
        else:
            self._end(why)
        return True

    def _expire(self) -> None:
        self._timer = None
        self._interrupt(_expired())

    def _stop(self) -> None:
        self._stopping = True
        self._interrupt(_stopped())

    def cancel(self) -> bool:
        if self.done():
            return False
        self._cancel_requested = True
        return self._interrupt(_CALLER)

    def _over(self) -> bool:
        return self._status is not None and (self._closing is None or self._closing.done())

    def _finished(self) -> asyncio.Future[Any]:
        if self._waiter is None:
            self._waiter = self._loop.create_future()
            if self._over():
                self._waiter.set_result(None)
        return self._waiter

    def done(self) -> bool:
        # As gRPC's: done once cancelled, expired or stopped, before the reader has woken.
        return self._status is not None or self._cut is not None

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        if self._status is not None:
            self._loop.call_soon(callback, self)
        else:
            self._callbacks.append(callback)

    async def _settled(self) -> None:
        if self._status is None:
            # Known when a read ends the call, or the deadline, a cancel or the server's stop.
            if self._known is None:
                self._known = self._loop.create_future()
            await asyncio.shield(self._known)

    def __del__(self) -> None:
        # Dropped by its caller between reads, neither cancelled nor timed (a deadline's timer
        # holds the call): cut the handler short in its own context, as cancel() would, rather
        # than leave its generator to the interpreter's finalizer in whatever context is current.
        # (The garbage collector may run this in any thread: the work is handed to the loop.)
        if self._status is not None or self._messages is None or self._closing is not None:
            return
        _LIVE.discard(self._messages)
        with contextlib.suppress(Exception):  # the loop is closed, or the interpreter exiting
            self._loop.call_soon_threadsafe(_dropped, self._loop, self._messages, self._vars,
                                            self._ctx)


class _MultiCallable:
    def __init__(self, channel: LocalChannel, method: str) -> None:
        self._channel = channel
        self._method = method

    def _check_open(self) -> None:
        if self._channel._closed:
            raise aio.UsageError("Channel is closed.")


class _UnaryUnary(_MultiCallable, aio.UnaryUnaryMultiCallable[Any, Any]):
    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: MetadataLike = None, **_: Any) -> LocalUnaryUnaryCall:
        self._check_open()
        return LocalUnaryUnaryCall(self._channel, self._method, request, timeout, metadata)


class _UnaryStream(_MultiCallable, aio.UnaryStreamMultiCallable[Any, Any]):
    def __call__(self, request: Any, *, timeout: float | None = None,
                 metadata: MetadataLike = None, **_: Any) -> LocalUnaryStreamCall:
        self._check_open()
        return LocalUnaryStreamCall(self._channel, self._method, request, timeout, metadata)


class _StreamUnary(_MultiCallable, aio.StreamUnaryMultiCallable[Any, Any]):
    def __call__(self, request_iterator: Any = None, timeout: float | None = None,
                 metadata: MetadataLike = None, credentials: Any = None,
                 wait_for_ready: bool | None = None, compression: Any = None,
                 ) -> LocalStreamUnaryCall:
        if request_iterator is None:
            raise ValueError("local stream-unary calls take a request iterator")
        self._check_open()
        return LocalStreamUnaryCall(self._channel, self._method, request_iterator, timeout,
                                    metadata)


class _StreamStream(_MultiCallable, aio.StreamStreamMultiCallable[Any, Any]):
    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        # Bidirectional streams are reflection's only: callers use the gRPC port for that.
        raise NotImplementedError(f"{self._method}: bidirectional streams are not served locally")


class LocalChannel(aio.Channel):
    """A ``grpc.aio.Channel`` whose calls are served by a ``LocalServer`` in this process."""

    def __init__(self, server: LocalServer) -> None:
        self._server = server
        self._closed = False

    def unary_unary(self, method: str, request_serializer: Any = None,
                    response_deserializer: Any = None, _registered_method: bool | None = False
                    ) -> _UnaryUnary:
        return _UnaryUnary(self, method)

    def unary_stream(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool | None = False
                     ) -> _UnaryStream:
        return _UnaryStream(self, method)

    def stream_unary(self, method: str, request_serializer: Any = None,
                     response_deserializer: Any = None, _registered_method: bool | None = False
                     ) -> _StreamUnary:
        return _StreamUnary(self, method)

    def stream_stream(self, method: str, request_serializer: Any = None,
                      response_deserializer: Any = None, _registered_method: bool | None = False
                      ) -> _StreamStream:
        return _StreamStream(self, method)

    async def close(self, grace: float | None = None) -> None:
        """As grpc's: no new calls; running ones get ``grace`` seconds, then are cancelled."""
        self._closed = True
        await _end_calls([c for c in list(self._server._calls) if c._channel is self], grace,
                         stopping=False)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return grpc.ChannelConnectivity.READY

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await asyncio.Event().wait()  # a local channel never changes state

    async def channel_ready(self) -> None:
        return None

    async def __aenter__(self) -> LocalChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class Registrar:
    """Registers every handler on the real server and on the local one alike."""

    def __init__(self, server: aio.Server, local: LocalServer) -> None:
        self._server = server
        self._local = local

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)
        self._local.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self._server.add_registered_method_handlers(service, handlers)
        self._local.add_registered_method_handlers(service, handlers)
