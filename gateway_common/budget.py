"""The process's budget of bytes held in memory for requests and answers read whole.

One ``ByteBudget`` per process (``serve`` shares the core's with its edge): the edge counts each
request body it reads, the core each upstream answer it reads whole, times ``BUFFER_COST_FACTOR``
(the bytes, their parsed form, the message built from them, and its encoding on the way out), from
the first byte until the request or call ends. What does not fit is refused (503 with
``Retry-After``) rather than letting the process grow.
"""

from __future__ import annotations

# What a body read whole costs in memory, per byte of it, until its request ends.
BUFFER_COST_FACTOR = 6


class ByteBudget:
    """A counter with a ceiling: ``try_take`` succeeds while the total stays within it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def try_take(self, nbytes: int) -> bool:
        if self.used + nbytes > self.capacity:
            return False
        self.used += nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes
