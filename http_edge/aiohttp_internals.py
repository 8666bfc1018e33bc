"""The edge's one use of aiohttp's private attributes, in one place, checked against the installed
aiohttp by ``tests/test_aiohttp_internals.py``.

``StreamResponse._send_headers_immediately`` (False on aiohttp's own ``Response``) holds a
response's status line and headers back until its first body write, so that both leave in one
send. Versions without the attribute ignore it: the headers then go out at ``prepare()``, in a
write of their own, and nothing else changes.
"""

from __future__ import annotations

from aiohttp import web


class HeldHeadersResponse(web.StreamResponse):
    """A streamed response whose headers leave with its first body write."""

    _send_headers_immediately = False


def holds_headers() -> bool:
    """Whether the installed aiohttp knows the attribute (else the class above is a plain
    ``StreamResponse``)."""
    return hasattr(web.StreamResponse, "_send_headers_immediately")
