"""Upstream HTTP calls shared by every HTTP provider: deadlines, error mapping, SSE parsing.

Each call is bounded by the request's deadline, carries ``x-request-id``, and turns every failure
into a ``gateway_core.errors`` exception with a clear message: connection refused, a 5xx, a body
that is not JSON, a timeout. Streams are parsed as they arrive, never buffered whole;
leaving the ``async for`` early (a cancelled call) closes the upstream response at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from gateway_core.errors import (
    GatewayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
)
from gateway_core.providers.base import Call

log = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
_MAX_ERROR_CHARS = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + "..."


def upstream_message(body: bytes) -> str:
    """The human message in an upstream error body (OpenAI, TGI, FastAPI shapes), never a dump."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data.get("message")))
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, list):  # FastAPI validation errors
            err = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in err)
        if isinstance(err, str):
            return _short(err.splitlines()[0] if err else err)
    return ""


def _shown_url(url: str) -> str:
    """An upstream URL fit for an error message: no credentials, no query string."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def status_error(status: int, body: bytes, url: str) -> GatewayError:
    """Map an upstream's non-2xx answer to the error the caller should see."""
    detail = upstream_message(body)
    suffix = f": {detail}" if detail else ""
    if status == 429:
        return UpstreamRateLimited(f"upstream is rate limiting requests{suffix}")
    if status in (400, 413, 422):
        return UpstreamRejected(f"upstream rejected the request (HTTP {status}){suffix}")
    if status in (401, 403):
        return UpstreamError(
            f"upstream refused the gateway's credentials (HTTP {status}); check the model's"
            " api_key_env", kind="auth",
        )
    if status == 404:
        return UpstreamError(f"upstream has no such route or model (HTTP 404 from {_shown_url(url)})",
                             kind="status")
    return UpstreamError(f"upstream failed with HTTP {status}{suffix}", kind="status")


def _headers(base: Mapping[str, str], call: Call, api_key: str | None) -> dict[str, str]:
    headers = dict(base)
    if call.request_id:
        headers["X-Request-Id"] = call.request_id
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _connect_error(url: str, exc: BaseException) -> UpstreamError:
    origin = "/".join(url.split("/", 3)[:3])
    log.warning("upstream %s unreachable: %s", origin, exc)
    return UpstreamError(f"upstream {origin} is unreachable ({exc.__class__.__name__})",
                         kind="connect")


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


# The largest upstream answer read whole (what gRPC's default receive limit at the edge allowed).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


def _too_large() -> UpstreamError:
    return UpstreamError(f"upstream answered with more than {MAX_RESPONSE_BYTES >> 20} MiB",
                         kind="protocol")


async def _bounded_body(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _too_large()
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
        async with session.request(
            method, url, data=payload,
            headers=_headers(headers or _JSON_HEADERS, call, api_key),
            timeout=call.client_timeout(),
        ) as resp:
            body = await _bounded_body(resp)
            if resp.status >= 300:
                raise status_error(resp.status, body, url)
            return body
    except TimeoutError as exc:
        raise UpstreamTimeout("the upstream did not answer before the request deadline") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        raise _connect_error(url, exc) from exc
    finally:
        call.upstream_seconds += loop.time() - started


MAX_EVENT_BYTES = 1 << 20


def _data(line: bytes) -> bytes | None:
    """The payload of an SSE ``data:`` line; None for blank lines, comments, event:/id: fields."""
    if not line.startswith(b"data:"):
        return None
    return line[5:].strip() or None


def _event(payload: bytes) -> Any:
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError("upstream sent a stream event that is not JSON",
                            kind="protocol") from exc
    if isinstance(data, dict) and "error" in data and "choices" not in data:
        detail = upstream_message(payload)
        raise UpstreamError(f"upstream failed mid-stream: {detail or 'unknown error'}",
                            kind="status")
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
        resp = await session.post(
            url, data=orjson.dumps(json_body), headers=_headers(_SSE_HEADERS, call, api_key),
            timeout=call.client_timeout(),
        )
        if resp.status >= 300:
            raise status_error(resp.status, await resp.read(), url)
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
                    batch.append(_event(payload))
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
                yield [_event(payload)]
                waited += loop.time() - paused
    except TimeoutError as exc:
        raise UpstreamTimeout("the upstream did not finish before the request deadline") from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
        raise _connect_error(url, exc) from exc
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
