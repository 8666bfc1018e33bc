"""The access log: one line per request (SPEC §13), JSON by default.

A line holds: time, request id, dialect, route (its template, not the raw path), model (the one
the request resolved to) and the model that served it, the upstream endpoint of the last attempt,
attempts, status, duration and time to first token in ms, prompt and completion tokens, the token
id (never a secret), the end user, the error reason and the trace id. The edge writes one per HTTP
request; the core writes one per gRPC call that did not come from the edge.

``serve``, ``core`` and ``edge`` write the lines to stdout themselves (``setup``): buffered, and
flushed every ``FLUSH_SECONDS`` or when the buffer fills, one write for many lines (the logging
module would format, lock and flush per line: about a tenth of a request's work). Elsewhere (a
library user, the tests) the lines go to the logger ``gateway.access``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, BinaryIO

import orjson

log = logging.getLogger("gateway.access")

FLUSH_SECONDS = 0.1
MAX_BUFFER = 64 * 1024


class _Writer:
    """Lines to a binary stream, buffered (see the module's docstring)."""

    def __init__(self, out: BinaryIO, as_json: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.buffer: list[bytes] = []
        self.size = 0
        self.scheduled = False

    def add(self, line: bytes) -> None:
        self.buffer.append(line)
        self.size += len(line)
        if self.size >= MAX_BUFFER:
            self.flush()
        elif not self.scheduled:
            try:
                asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
                self.scheduled = True
            except RuntimeError:  # no loop: at once
                self.flush()

    def flush(self) -> None:
        self.scheduled = False
        if not self.buffer:
            return
        data = b"".join(self.buffer)
        self.buffer.clear()
        self.size = 0
        try:
            self.out.write(data)
            self.out.flush()
        except (OSError, ValueError):  # a closed or broken stdout must not fail requests
            pass


_writer: _Writer | None = None
_off = False
_as_json = True
# The time prefix of the current second, made once a second.
_second = -1
_stamp = ""


def setup(mode: str, out: BinaryIO | None = None) -> None:
    """``json``, ``text`` or ``off``: lines on stdout (or ``out``), written by this module."""
    global _writer, _off, _as_json
    if _writer is not None:
        _writer.flush()
    _off = mode == "off"
    _as_json = mode != "text"
    _writer = None if _off else _Writer(out or sys.stdout.buffer, _as_json)


def reset() -> None:
    """Back to the logger ``gateway.access`` (what a library user and the tests get)."""
    global _writer, _off, _as_json
    if _writer is not None:
        _writer.flush()
    _writer, _off, _as_json = None, False, True


def flush() -> None:
    if _writer is not None:
        _writer.flush()


def enabled() -> bool:
    if _off:
        return False
    return _writer is not None or log.isEnabledFor(logging.INFO)


def _now() -> str:
    global _second, _stamp
    t = time.time()
    second = int(t)
    if second != _second:
        _second = second
        _stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_stamp}.{int((t - second) * 1000):03d}Z"


def write(fields: dict[str, Any]) -> None:
    """One line; fields that are None are left out."""
    line = {"time": _now(), **{k: v for k, v in fields.items() if v is not None}}
    if _as_json:
        data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
    else:
        data = (" ".join(f"{k}={v}" for k, v in line.items()) + "\n").encode()
    if _writer is not None:
        _writer.add(data)
    else:
        log.info(data.decode().rstrip("\n"))
