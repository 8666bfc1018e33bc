"""``delegate``: an async generator layer that hands what is thrown into it to the one it wraps.

A stream here is layers of async generators (interceptors, the servicer, a provider), each doing
``async for item in inner: yield item``. Python's ``async for`` does not pass on what is thrown
into the outer generator at its ``yield`` (a cancellation that arrives while the stream waits for
its reader, or a close): the inner generators would stay suspended, their ``finally`` blocks,
timeouts, locks and upstream responses left to the garbage collector. ``delegate`` does for a
layer what ``yield from`` does for plain generators::

    async with delegate(behavior(request, context)) as items:
        async for item in items:
            yield item

An exception raised at this layer's ``yield`` is thrown into ``inner`` at its own ``yield`` (so an
``asyncio.timeout`` held there sees its cancellation, and the inner layer's answer, such as an
error of its own, comes back out here); leaving the block early closes ``inner``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class delegate(Generic[T]):  # used as a context manager, like contextlib's
    """See the module docstring."""

    __slots__ = ("inner",)

    def __init__(self, inner: AsyncIterator[T]) -> None:
        self.inner = inner

    async def __aenter__(self) -> AsyncIterator[T]:
        return self.inner

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> bool:
        inner: Any = self.inner
        if getattr(inner, "ag_frame", True) is None:
            return False  # it has ended (what is being raised, if anything, came from it)
        if exc is None or isinstance(exc, GeneratorExit) or not hasattr(inner, "athrow"):
            if hasattr(inner, "aclose"):
                await inner.aclose()
            return False
        try:
            await inner.athrow(exc)  # raises its answer: ``exc`` again, or an error of its own
        except StopAsyncIteration:
            return False  # it ended quietly: ``exc`` goes on here
        await inner.aclose()  # it went on and yielded again: closed there
        return False
