"""``CoreAPI`` in process (``serve``): the edge's calls served by the core's own handlers.

A call runs the handler the gRPC server would run for it (the same servicers behind the same
server interceptors: metrics, errors, usage, auth; ``HandlerTable``), in the caller's task, with
plain asyncio for what the transport does otherwise:

- the deadline is ``asyncio.timeout_at``: past it the handler is cancelled where it waits and the
  call fails with DEADLINE_EXCEEDED;
- a unary handler is awaited; a stream's handler is an async generator that the caller iterates,
  so it runs no further ahead than the caller reads, with no task or buffer in between;
- a cancelled caller cancels the handler (it is the same task); a caller that leaves a stream's
  ``async with`` early has a cancellation thrown into the handler at its ``yield``, so it
  cancels its upstream call as a cancelled gRPC handler does;
- ``context.abort`` raises; the call fails with ``AioRpcError`` carrying the code, details and
  trailing metadata, as from a gRPC channel.

Because the handler runs in the caller's task, it is ordinary async code: it may hold an
``asyncio.timeout``, a lock or a context variable across a ``yield``. Its context variables are the
caller's (see docs/ARCHITECTURE.md). Messages are handed over, not serialized: neither side
touches a message after passing it on. Not reproduced: gRPC's message size limits and metadata
validation (the edge sends bounded bodies and printable ASCII metadata).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, NoReturn, TypeAlias

import grpc
from grpc import aio

from gateway_common.core_api import (
    CallOptions,
    Metadata,
    Reply,
    Req,
    Resp,
    Rpc,
    ServerStream,
    Unary,
)
from gateway_core.interceptors import direct_stream

log = logging.getLogger(__name__)

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic in the type stubs only
Lookup: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
_EMPTY = aio.Metadata()


class _Details(NamedTuple):
    method: str
    invocation_metadata: Metadata


class HandlerTable:
    """The core's method handlers, registered as on the gRPC server, behind its interceptors."""

    def __init__(self, interceptors: Sequence[aio.ServerInterceptor]) -> None:
        self._generic: list[grpc.GenericRpcHandler] = []
        self._registered: dict[str, Handler] = {}

        async def lookup(details: grpc.HandlerCallDetails) -> Handler | None:
            return self._lookup(details)

        entry: Lookup = lookup
        for interceptor in reversed(interceptors):  # built once, outermost first
            entry = _chain(interceptor, entry)
        self._entry = entry

    # The two registration calls that the generated ``add_*Servicer_to_server`` functions make.
    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler

    def _lookup(self, details: grpc.HandlerCallDetails) -> Handler | None:
        found = self._registered.get(details.method)
        if found is None:
            for generic in self._generic:
                found = generic.service(details)
                if found is not None:
                    break
        return found

    async def find(self, method: str, metadata: Metadata) -> Handler | None:
        """The handler of one call, as the interceptors wrapped it (they may look at metadata)."""
        return await self._entry(_Details(method, metadata))  # type: ignore[arg-type]


def _chain(interceptor: aio.ServerInterceptor, continuation: Lookup) -> Lookup:
    async def step(details: grpc.HandlerCallDetails) -> Handler | None:
        return await interceptor.intercept_service(continuation, details)

    return step


def rpc_error(code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> aio.AioRpcError:
    return aio.AioRpcError(code, _EMPTY, aio.Metadata(*trailing) if trailing else _EMPTY, details)


class Context:
    """The servicer context of an in-process call: what handlers and interceptors use of
    ``grpc.aio.ServicerContext`` (metadata, time left, abort, status, trailers)."""

    __slots__ = (
        "_cancelled",
        "_code",
        "_details",
        "_done",
        "_initial",
        "_metadata",
        "_trailing",
        "deadline",
        "stopping",
        "timeout",
    )

    def __init__(self, options: CallOptions, loop: asyncio.AbstractEventLoop) -> None:
        self._metadata: Metadata = options.metadata
        self.deadline = None if options.timeout is None else loop.time() + options.timeout
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._initial: Metadata = ()
        self._cancelled = False
        self.timeout: asyncio.Timeout | None = None  # the deadline, while the handler runs
        self.stopping = False  # ended by the core's stop: UNAVAILABLE, not DEADLINE_EXCEEDED
        self._done: list[Callable[[Context], object]] | None = None

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Metadata = ()) -> NoReturn:
        self._code = grpc.StatusCode.UNKNOWN if code == grpc.StatusCode.OK else code  # as grpc
        self._details = details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise aio.AbortError()

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    def set_trailing_metadata(self, trailing_metadata: Metadata) -> None:
        self._trailing = tuple(trailing_metadata)

    async def send_initial_metadata(self, initial_metadata: Metadata) -> None:
        self._initial = tuple(initial_metadata)

    def initial_metadata(self) -> Metadata:
        return self._initial

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    def cancelled(self) -> bool:
        return self._cancelled

    def peer(self) -> str:
        return "in-process"

    def add_done_callback(self, callback: Callable[[Context], object]) -> None:
        """``callback(context)`` once the call has ended, as grpc.aio's does."""
        if self._done is None:
            self._done = []
        self._done.append(callback)

    def done(self) -> None:
        """The call has ended: run the done callbacks (each at most once)."""
        callbacks, self._done = self._done, None
        for callback in callbacks or ():
            try:
                callback(self)
            except Exception:
                log.exception("a done callback of an in-process call failed")

    def stop(self) -> None:
        """End the call now, as a stopping gRPC server does (UNAVAILABLE)."""
        self.stopping = True
        if self.timeout is not None:
            with contextlib.suppress(RuntimeError):  # its handler has just ended
                self.timeout.reschedule(asyncio.get_running_loop().time())

    def failure(self, exc: BaseException | None) -> aio.AioRpcError | None:
        """How the call fails, the handler having ended with ``exc`` (None: it returned)."""
        if self.timeout is not None and self.timeout.expired():  # the deadline or the stop
            if self.stopping:
                return rpc_error(grpc.StatusCode.UNAVAILABLE, "Cancelling all calls")
            return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if exc is None or isinstance(exc, aio.AbortError):
            if self._code is None or self._code == grpc.StatusCode.OK:
                return None if exc is None else rpc_error(grpc.StatusCode.UNKNOWN, "")
            return rpc_error(self._code, self._details, self._trailing)
        # What grpc.aio reports for an exception that escapes a handler (ours never let one).
        log.error("unhandled exception in an in-process call", exc_info=exc)
        return rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc).__name__}")


class InProcessCore:
    """``CoreAPI`` served by ``table``'s handlers in the caller's task (module docstring)."""

    def __init__(self, table: HandlerTable) -> None:
        self._table = table
        self._running: set[Context] = set()
        self._stopped = False
        self._idle: asyncio.Event | None = None  # set when the last call ends, once stopping

    async def behavior(self, rpc: Rpc[Any, Any], kind: str, ctx: Context) -> Any:
        """The intercepted behaviour of ``rpc`` (``kind``: "unary_unary" or "unary_stream")."""
        if self._stopped:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the core is shutting down")
        handler = await self._table.find(rpc.path, ctx.invocation_metadata())
        behavior = None if handler is None else getattr(handler, kind)
        if behavior is None:
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        return behavior

    def started(self, ctx: Context, timeout: asyncio.Timeout) -> None:
        ctx.timeout = timeout
        self._running.add(ctx)

    def ended(self, ctx: Context) -> None:
        ctx.done()
        self._running.discard(ctx)
        if self._idle is not None and not self._running:
            self._idle.set()

    async def unary(self, rpc: Unary[Req, Resp], request: Req, options: CallOptions
                    ) -> Reply[Resp]:
        ctx = Context(options, asyncio.get_running_loop())
        behavior = await self.behavior(rpc, "unary_unary", ctx)
        message: Resp | None = None
        try:
            async with asyncio.timeout_at(ctx.deadline) as timeout:
                self.started(ctx, timeout)
                message = await behavior(request, ctx)
            error = ctx.failure(None)
        except asyncio.CancelledError:
            ctx._cancelled = True
            raise
        except Exception as exc:  # an abort, the deadline, or an escaped error
            error = ctx.failure(exc)
        finally:
            self.ended(ctx)
        if error is not None:
            raise error
        assert message is not None
        return Reply(message, ctx.trailing_metadata())

    def stream(self, rpc: ServerStream[Req, Resp], request: Req, options: CallOptions
               ) -> InProcessStream[Resp]:
        return InProcessStream(self, rpc, request, options)

    async def close(self) -> None:
        """Nothing to release: calls end with their callers' tasks; ``stop`` ends the core's."""

    async def stop(self, grace: float | None) -> None:
        """As the gRPC server's stop: refuse new calls, give running ones ``grace`` seconds
        (None or 0: none), then end them with UNAVAILABLE and wait for their handlers."""
        self._stopped = True
        self._idle = asyncio.Event()
        if self._running and grace:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for ctx in list(self._running):
            ctx.stop()
        if self._running:
            await self._idle.wait()


_CANCELLED = asyncio.CancelledError()  # what _throw_into says of a handler that let it through


async def _throw_into(messages: Any, exc: asyncio.CancelledError) -> BaseException | None:
    """Throw ``exc`` into a stream's handler at its ``yield``; how it ended (None: quietly)."""
    try:
        await messages.athrow(exc)
    except asyncio.CancelledError:
        return _CANCELLED
    except StopAsyncIteration:
        return None
    except Exception as raised:
        return raised
    await messages.aclose()  # it went on and yielded again: closed there
    return None


class InProcessStream(AsyncIterator[Resp]):
    """A server stream whose handler the caller iterates in its own task (module docstring)."""

    def __init__(self, core: InProcessCore, rpc: ServerStream[Any, Resp], request: Any,
                 options: CallOptions) -> None:
        self._core = core
        self._rpc = rpc
        self._request = request
        self._ctx = Context(options, asyncio.get_running_loop())
        self._messages: Any = None  # the handler's async generator
        self._ended = True  # until the handler has started
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    async def __aenter__(self) -> InProcessStream[Resp]:
        ctx = self._ctx
        behavior = await self._core.behavior(self._rpc, "unary_stream", ctx)
        self._task = asyncio.current_task()
        assert self._task is not None
        self._cancelling = self._task.cancelling()
        timeout = asyncio.timeout_at(ctx.deadline)
        await timeout.__aenter__()
        self._core.started(ctx, timeout)
        self._messages = direct_stream(behavior)(self._request, ctx)
        self._ended = False
        return self

    async def __anext__(self) -> Resp:
        if self._messages is None:
            raise aio.UsageError("a stream is read inside its 'async with'")
        try:
            message: Resp = await self._messages.__anext__()
        except StopAsyncIteration:
            self._ended = True
            if (error := self._ctx.failure(None)) is not None:
                raise error from None
            raise
        except asyncio.CancelledError:
            self._ended = True
            self._ctx._cancelled = True
            raise
        except Exception as exc:
            self._ended = True
            raise self._ctx.failure(exc) or rpc_error(grpc.StatusCode.UNKNOWN, "") from None
        if self._ctx.timeout.expired():  # type: ignore[union-attr]  # it went on past the deadline
            await self._cut(None)
            raise self._ctx.failure(None) or rpc_error(grpc.StatusCode.UNKNOWN, "")
        return message

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> bool:
        ctx = self._ctx
        assert ctx.timeout is not None  # entered
        try:
            outcome = await self._cut(exc) if not self._ended else exc
            try:
                await ctx.timeout.__aexit__(type(outcome) if outcome else None, outcome, None)
            except TimeoutError:
                raise ctx.failure(None) or rpc_error(grpc.StatusCode.UNKNOWN, "") from None
        finally:
            self._core.ended(ctx)
        if outcome is exc:
            return False
        if outcome is None:
            return True  # the handler's own timer interrupted the caller, then it ended well
        raise outcome

    async def _cut(self, exc: BaseException | None) -> BaseException | None:
        """The caller left the block while the handler waits at its ``yield`` (``exc``: why):
        cancel it there, as a cancelled task would be (it closes its upstream call). Returns
        what the block ends with."""
        self._ended = True
        self._ctx._cancelled = True
        outcome = await _throw_into(
            self._messages,
            exc if isinstance(exc, asyncio.CancelledError) else asyncio.CancelledError())
        assert self._task is not None
        if (outcome is _CANCELLED or not isinstance(exc, asyncio.CancelledError)
                or self._task.cancelling() > self._cancelling):
            return exc  # the caller left, or is cancelled (from outside, or by the deadline)
        # The handler's own timer (an asyncio.timeout held across its yield) fired while the
        # caller held the task: the cancellation was the handler's, and so is the outcome.
        return None if outcome is None else self._ctx.failure(outcome)

    def trailing_metadata(self) -> Metadata:
        return self._ctx.trailing_metadata()

    def initial_metadata(self) -> Metadata:
        return self._ctx.initial_metadata()

    def __aiter__(self) -> InProcessStream[Resp]:
        return self


class Registrar:
    """Registers every service on the gRPC server and on the in-process table alike."""

    def __init__(self, server: aio.Server, table: HandlerTable) -> None:
        self._server = server
        self._table = table

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(handlers)
        self._table.add_generic_rpc_handlers(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        self._server.add_registered_method_handlers(service, handlers)
        self._table.add_registered_method_handlers(service, handlers)
