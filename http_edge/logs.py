"""What the edge logs about bad clients: one line each, no request bytes, repeats rate-limited.

A client error (a request that cannot be parsed, a body that cannot be decoded, a slow sender cut
off) is logged at INFO as one line naming the problem, never with a traceback and never with the
bytes the client sent (a header line may be ``Authorization: Bearer <secret>``). The same line
(problem and status, whoever sent it) is logged at most once per ``INTERVAL`` seconds; the next one
after a quiet spell says how many were left out. Server errors are not handled here: they keep
their traceback and the request id.
"""

from __future__ import annotations

import logging
import re
import time

from aiohttp import http_exceptions as hx
from aiohttp.web_protocol import RequestPayloadError

INTERVAL = 10.0
_MAX_KEYS = 512


class ClientErrorLog:
    """Rate-limited one-line logging of client errors, keyed by what went wrong."""

    def __init__(self, logger: logging.Logger, interval: float = INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        # key → (time of the last line logged, lines left out since)
        self._seen: dict[tuple[str, int], tuple[float, int]] = {}

    def allow(self, problem: str, status: int) -> int | None:
        """None when this line is to be left out; else how many like it were left out before."""
        key = (problem, status)
        now = time.monotonic()
        last, dropped = self._seen.get(key, (-self.interval, 0))
        if now - last < self.interval:
            self._seen[key] = (last, dropped + 1)
            return None
        if len(self._seen) >= _MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        return dropped

    def log(self, problem: str, status: int, remote: str | None) -> None:
        dropped = self.allow(problem, status)
        if dropped is None:
            return
        more = f" ({dropped} more like it not logged)" if dropped else ""
        self.logger.info("client error from %s: %s (answered %d)%s", remote or "?", problem,
                         status, more)


# aiohttp's parser and payload errors → (status, a fixed message). Their own messages quote the
# offending bytes, so they are never shown or logged. First match wins (subclasses first).
PARSER_ERRORS: tuple[tuple[type[BaseException], int, str], ...] = (
    (hx.LineTooLong, 400, "a request line or header field is longer than the gateway accepts"),
    (hx.BadHttpMethod, 400, "the request method is not valid HTTP"),
    (hx.BadStatusLine, 400, "the request line is not valid HTTP"),
    (hx.InvalidURLError, 400, "the request target is not a valid URL"),
    (hx.InvalidHeader, 400, "a request header is malformed"),
    (hx.TransferEncodingError, 400, "the request body's chunked encoding is malformed"),
    (hx.ContentLengthError, 400, "the request body does not match its Content-Length"),
    (hx.DecompressSizeError, 413, "the request body is too large once decompressed"),
    (hx.ContentEncodingError, 400, "the request body cannot be decoded by its Content-Encoding"),
    (hx.HttpProcessingError, 400, "the request is not valid HTTP"),
    (RequestPayloadError, 400, "the request body could not be read"),
)


# llhttp's reason, the text before the quoted bytes (``Invalid header value char:\n\n  b'...'``).
_LLHTTP_REASON = re.compile(r"([A-Za-z][A-Za-z ]{2,60}):\n")


def _reason(exc: BaseException) -> str:
    """llhttp's fixed reason for a generic parse error, never the bytes quoted after it."""
    if type(exc) is not hx.BadHttpMessage:
        return ""
    match = _LLHTTP_REASON.match(str(getattr(exc, "message", "")))
    return f" ({match.group(1).lower()})" if match else ""


def describe(exc: BaseException | None) -> tuple[int, str] | None:
    """(status, fixed message) for a parser or payload error, or one that it caused; else None."""
    seen: set[int] = set()
    found: tuple[int, str] | None = None
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for cls, status, message in PARSER_ERRORS:
            if isinstance(exc, cls):
                if cls is not RequestPayloadError:
                    return status, message + _reason(exc)
                found = found or (status, message)
                break
        exc = exc.__cause__ or exc.__context__
    return found


def problem_of(exc: BaseException | None) -> str | None:
    described = describe(exc)
    return described[1] if described else None


class ClientErrorFilter(logging.Filter):
    """aiohttp's own records about a request it could not parse or read (an ERROR with a traceback
    that quotes the offending line) become one INFO line naming the problem, without the bytes.
    (The edge's connections log these through ``ClientErrorLog``; this catches any other.)"""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        problem = problem_of(exc)
        if problem is None:
            return True
        record.msg = "client error: %s"
        record.args = (problem,)
        record.exc_info = record.exc_text = None
        record.stack_info = None
        if record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
