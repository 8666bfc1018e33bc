"""Upstream HTTP calls shared by every HTTP provider: deadlines, error mapping, SSE parsing.

Each call is bounded by the request's deadline, carries ``x-request-id``, and turns every failure
into a ``gateway_core.errors`` exception with a clear message: connection refused, a 5xx, a body
that is not JSON, a timeout. Streams are parsed as they arrive, never buffered whole;
leaving the ``async for`` early (a cancelled call) closes the upstream response at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway_core.errors import (
    NO_FIELDS,
    ErrorFields,
    GatewayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    trailer_value,
)
from gateway_core.providers.base import Call

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
_MAX_ERROR_CHARS = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def _error_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _message_of(data: dict[str, Any]) -> str:
    """The first line of the human message in an upstream error body (OpenAI, TGI, FastAPI
    shapes), never a dump."""
    err = data.get("error", data.get("detail", data.get("message")))
    if isinstance(err, dict):
        err = err.get("message")
    if isinstance(err, list):  # FastAPI validation errors
        err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
    if isinstance(err, str):
        return err.splitlines()[0] if err else err
    return ""


def _detail(data: dict[str, Any] | None, url: str, api_key: str | None) -> str:
    """The upstream's message fit for the caller: scrubbed (before it is cut, so that no part
    of a secret is left), then at most ``_MAX_ERROR_CHARS``."""
    return _short(_scrubbed(_message_of(data), url, api_key)) if data is not None else ""


def _fields_of(data: dict[str, Any]) -> ErrorFields:
    """OpenAI's ``{"error": {"type", "param", "code"}}`` (vLLM's, llama.cpp's too), or TGI's
    ``{"error": "...", "error_type"}``. A non-string field (llama.cpp's ``"code": 400``, a copy
    of the HTTP status) is left out: the gateway's own code stands instead."""
    err = data.get("error")
    if isinstance(err, dict):
        return ErrorFields(type=trailer_value(err.get("type")), param=trailer_value(err.get("param")),
                           code=trailer_value(err.get("code")))
    if isinstance(err, str):
        return ErrorFields(type=trailer_value(data.get("error_type")))
    return NO_FIELDS


# What an upstream's message must not carry to the caller: IPv4 addresses (with a port), bearer
# credentials. The upstream's own host and API key are removed by name (``_scrubbed``).
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b")
_BEARER = re.compile(r"\b(Bearer|Basic)\s+\S+", re.IGNORECASE)


def _scrubbed(text: str, url: str, api_key: str | None) -> str:
    """An upstream's message without the upstream's address or credentials (SPEC: client-facing
    errors never name an upstream address; the log has it)."""
    if api_key:
        text = text.replace(api_key, "***")
    parts = urlsplit(url)
    if parts.password:
        text = text.replace(parts.password, "***")
    for name in (parts.netloc, parts.hostname):
        if name:  # as a whole name only: "vllm" in "vllm-7" or "vllm_config" is left alone
            text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", "<upstream>", text)
    text = _BEARER.sub(r"\1 ***", text)
    return _IPV4.sub("<address>", text)


def _retry_after(headers: Mapping[str, str] | None) -> str | None:
    """The upstream's ``Retry-After`` when well formed: delay-seconds or an HTTP date."""
    value = trailer_value((headers or {}).get("Retry-After"))
    if value is None:
        return None
    if value.isdigit():
        return value
    with contextlib.suppress(TypeError, ValueError, IndexError):
        if parsedate_to_datetime(value) is not None:
            return value
    return None


def _shown_url(url: str) -> str:
    """An upstream URL fit for the log: no credentials, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


# An upstream's refusal of the request: its status is kept for HTTP callers through the reason.
_REJECTED_REASONS = {400: "upstream_rejected", 413: "upstream_too_large",
                     422: "upstream_unprocessable"}


def status_error(status: int, body: bytes, url: str, *, api_key: str | None = None,
                 headers: Mapping[str, str] | None = None) -> GatewayError:
    """Map an upstream's non-2xx answer to the error the caller should see.

    A refusal (400, 413, 422) passes on the upstream's own message, ``type``, ``param`` and
    ``code``; a 429 its message and ``Retry-After``. Neither the upstream's address nor its
    credentials reach the caller.
    """
    data = _error_object(body)
    detail = _detail(data, url, api_key)
    suffix = f": {detail}" if detail else ""
    if status == 429:
        fields = dataclasses.replace(_fields_of(data) if data is not None else NO_FIELDS,
                                     retry_after=_retry_after(headers))
        return UpstreamRateLimited(f"upstream is rate limiting requests{suffix}", fields=fields)
    if status in _REJECTED_REASONS:
        return UpstreamRejected(detail or f"upstream rejected the request (HTTP {status})",
                                reason=_REJECTED_REASONS[status],
                                fields=_fields_of(data) if data is not None else NO_FIELDS)
    if status in (401, 403):
        return UpstreamError(
            f"upstream refused the gateway's credentials (HTTP {status}); check the model's"
            " api_key_env", kind="auth",
        )
    if status == 404:
        log.warning("upstream %s answered 404", _shown_url(url))
        return UpstreamError(f"upstream has no such route or model (HTTP 404 for"
                             f" {urlsplit(url).path})", kind="status")
    return UpstreamError(f"upstream failed with HTTP {status}{suffix}", kind="status",
                         status=status)


def _headers(base: Mapping[str, str], call: Call, api_key: str | None) -> dict[str, str]:
    headers = dict(base)
    if call.request_id:
        headers["X-Request-Id"] = call.request_id
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    if call.traceparent:
        headers["traceparent"] = call.traceparent
    return headers


def _connect_error(url: str, exc: BaseException) -> UpstreamError:
    origin = "/".join(url.split("/", 3)[:3])
    log.warning("upstream %s unreachable: %s", origin, exc)
    return UpstreamError(f"upstream is unreachable ({exc.__class__.__name__})", kind="connect")


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    call: Call,
    *,
    json_body: Any = None,
    data: Any = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """One upstream call answered with JSON, parsed once."""
    body = await request_bytes(
        session, method, url, call, json_body=json_body, data=data, api_key=api_key,
        headers=headers,
    )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("upstream answered with a body that is not JSON",
                            kind="protocol") from exc


def too_large(limit: int) -> UpstreamError:
    shown = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    return UpstreamError(f"upstream answered with more than {shown} (the model's "
                         "max_response_bytes)", kind="protocol")


async def _bounded_body(resp: aiohttp.ClientResponse, call: Call) -> bytes:
    """The whole body, within the model's bound and counted against the memory budget (the whole
    declared length at once, else chunk by chunk as it comes)."""
    limit = call.max_response_bytes
    declared = resp.content_length
    if declared is not None:
        if declared > limit:
            raise too_large(limit)
        call.hold(declared)
    counted = declared or 0  # a compressed body grows past its declared length
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        if size > counted:
            call.hold(size - counted)
            counted = size
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def request_bytes(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    call: Call,
    *,
    json_body: Any = None,
    data: Any = None,
    api_key: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """One upstream call; the whole (bounded) answer body on 2xx, a mapped error otherwise."""
    payload = orjson.dumps(json_body) if json_body is not None else data
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        resp = await _open(session, method, url, payload,
                           _headers(headers or _JSON_HEADERS, call, api_key), call)
        try:
            body = await _bounded_body(resp, call)
            if resp.status >= 300:
                raise status_error(resp.status, body, url, api_key=api_key, headers=resp.headers)
            return body
        finally:
            resp.release()
    except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
            OSError) as exc:
        raise _transport_error(url, exc, "the upstream did not answer before the request "
                               "deadline") from exc
    finally:
        call.upstream_seconds += loop.time() - started


def _open(session: aiohttp.ClientSession, method: str, url: str, payload: Any,
          headers: dict[str, str], call: Call) -> Awaitable[aiohttp.ClientResponse]:
    """Send the request; the response once its headers arrived, within the headers stage
    timeout (``Call.headers_within``) when one is shorter than the deadline."""
    within = call.headers_within()
    request = session.request(method, url, data=payload, headers=headers,
                              timeout=call.client_timeout())
    return request if within is None else _headers_within(request, within)


async def _headers_within(request: Awaitable[aiohttp.ClientResponse], within: float
                          ) -> aiohttp.ClientResponse:
    try:
        async with asyncio.timeout(within):
            return await request
    except TimeoutError as exc:
        raise UpstreamTimeout(f"the upstream sent no response headers within {within:g} s "
                              "(timeouts.headers)", stage="headers") from exc


def _transport_error(url: str, exc: BaseException, deadline_message: str) -> GatewayError:
    """A failure below HTTP as the caller should see it: a stage or deadline timeout, or an
    unreachable upstream (its address goes to the log only)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        log.warning("upstream %s: connect timeout", _shown_url(url))
        return UpstreamTimeout("the upstream did not accept the connection in time "
                               "(timeouts.connect)", stage="connect")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(deadline_message)
    return _connect_error(url, exc)


MAX_EVENT_BYTES = 1 << 20


def _data(line: bytes) -> bytes | None:
    """The payload of an SSE ``data:`` line; None for blank lines, comments, event:/id: fields."""
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip() or None


def _event(payload: bytes, url: str, api_key: str | None) -> Any:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("upstream sent a stream event that is not JSON",
                            kind="protocol") from exc
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        detail = _detail(data, url, api_key)
        raise UpstreamError(f"upstream failed mid-stream: {detail or 'unknown error'}",
                            kind="status", fields=_fields_of(data))
    return data


async def stream_sse(
    session: aiohttp.ClientSession,
    url: str,
    call: Call,
    json_body: Any,
    *,
    api_key: str | None = None,
) -> AsyncIterator[Any]:
    """POST and yield each SSE ``data:`` payload parsed from JSON, as it arrives (see
    ``stream_sse_batches``)."""
    async for batch in stream_sse_batches(session, url, call, json_body, api_key=api_key):
        for event in batch:
            yield event


async def stream_sse_batches(
    session: aiohttp.ClientSession,
    url: str,
    call: Call,
    json_body: Any,
    *,
    api_key: str | None = None,
) -> AsyncIterator[list[Any]]:
    """POST and yield, for each network read, the SSE ``data:`` payloads it completed, parsed.

    Events that arrived together can then be forwarded together (one gRPC message instead of
    several) without waiting for anything. Ends at ``data: [DONE]`` or at the end of the body.
    A mid-stream ``{"error": ...}`` event becomes an UpstreamError (after the events before it).
    The upstream response is closed when the consumer stops early.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = 0.0  # at the yields: the caller's time, not the upstream's
    resp: aiohttp.ClientResponse | None = None
    done = False
    try:
        resp = await _open(session, "POST", url, orjson.dumps(json_body),
                           _headers(_SSE_HEADERS, call, api_key), call)
        if resp.status >= 300:
            raise status_error(resp.status, await _bounded_body(resp, call), url,
                               api_key=api_key, headers=resp.headers)
        if not resp.content_type.startswith("text/event-stream"):
            log.warning("upstream %s answered a stream request with %s", _shown_url(url),
                        resp.content_type)
            raise UpstreamError(f"upstream answered a stream request with {resp.status} and "
                                f"{_short(resp.content_type) or 'no content type'}, not an "
                                "event stream", kind="protocol")
        # Whatever has arrived is split into lines at once (one await per read, not per line).
        pending = b""
        async for block in resp.content.iter_any():
            lines = (pending + block if pending else block).split(b"\n")
            pending = lines.pop()  # a line not ended yet
            if len(pending) > MAX_EVENT_BYTES:
                raise UpstreamError(f"upstream sent a stream line longer than {MAX_EVENT_BYTES}"
                                    " bytes", kind="protocol")
            batch: list[Any] = []
            try:
                for raw in lines:
                    payload = _data(raw)
                    if payload is None:
                        continue
                    if payload == b"[DONE]":
                        done = True
                        break
                    batch.append(_event(payload, url, api_key))
            except UpstreamError:
                if batch:
                    yield batch  # what came before the failure still reaches the caller
                raise
            if batch:
                # It resumes once its caller has passed the batch on (written it to a client,
                # or, over gRPC, into a flow-control window): that time is not the upstream's.
                paused = loop.time()
                yield batch
                waited += loop.time() - paused
            if done:
                break
        else:  # the body ended without [DONE]; its last line may lack the newline
            payload = _data(pending)
            if payload is not None and payload != b"[DONE]":
                paused = loop.time()
                yield [_event(payload, url, api_key)]
                waited += loop.time() - paused
    except (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
            OSError) as exc:
        raise _transport_error(url, exc, "the upstream did not finish before the request "
                               "deadline") from exc
    finally:
        call.upstream_seconds += loop.time() - started - waited
        if resp is not None:
            # An unfinished body drops the connection so that the upstream stops generating for
            # a caller that has gone; after [DONE] only the end of the body is still to come.
            with contextlib.suppress(Exception):
                if resp.content.at_eof():
                    resp.release()
                elif done:
                    _finish_later(resp)
                else:
                    resp.close()


# Bodies that said [DONE] before their end was read (the usual case under load: the end of the
# chunked body comes in its own packet). They are read to the end in the background, so that the
# connection goes back to the pool instead of every stream costing a new TCP connection.
FINISHING: set[asyncio.Task[None]] = set()
_FINISH_SECONDS = 5.0


def _finish_later(resp: aiohttp.ClientResponse) -> None:
    task = asyncio.get_running_loop().create_task(_finish_body(resp))
    FINISHING.add(task)
    task.add_done_callback(FINISHING.discard)


async def _finish_body(resp: aiohttp.ClientResponse) -> None:
    ended = False
    try:
        async with asyncio.timeout(_FINISH_SECONDS):
            while await resp.content.readany():
                pass  # nothing is expected after [DONE]
        ended = True
    except (TimeoutError, aiohttp.ClientError, OSError):
        pass
    finally:
        if ended:
            resp.release()
        else:
            resp.close()
