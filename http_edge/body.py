"""Reading and checking request bodies: bounded size, JSON parsed once, fields typed.

Every problem is a 400 (or 413) that names the field and says what was expected. Explicit ``null``
counts as absent (TGI clients and some SDKs send nulls for unset parameters).
"""

from __future__ import annotations

import builtins
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway_common.budget import BUFFER_COST_FACTOR
from gateway_common.json_text import json_kind, shown
from http_edge.errors import REASON_TABLE, EdgeError
from http_edge.logs import describe
from http_edge.state import BUFFERS, STATE

# JSON nesting allowed in free-form fields: each JSON level is two protobuf levels (Value and
# Struct/ListValue), and protobuf refuses messages nested deeper than 100.
MAX_NESTING = 32
# Integer fields hold at most this unless the caller allows more (most are uint32 in the proto; a
# larger value would fail in protobuf, a 500): seeds pass the int64 range explicitly.
MAX_INT = 2**32 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_nesting(value: Any, what: str = "the body") -> None:
    """400 when JSON is nested deeper than MAX_NESTING (it could not cross gRPC)."""
    level: list[Any] = [value]
    for _ in range(MAX_NESTING):
        level = [v for item in level
                 for v in (item.values() if isinstance(item, dict)
                           else item if isinstance(item, list) else ())
                 if isinstance(v, dict | list)]
        if not level:
            return
    raise EdgeError.bad_request(f"{what} is nested more than {MAX_NESTING} levels deep")


def is_json_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header allows a JSON body: absent (curl and scripts that send
    none), ``application/json`` or a ``+json`` type, with any parameters. Form and text types are
    refused, which also keeps cross-site form posts out."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


def unreadable(exc: RequestPayloadError) -> EdgeError:
    """A body the parser could not read: a fixed message (the parser's own quotes the bytes),
    and the connection closed after the answer (the rest of the body cannot be framed)."""
    status, message = describe(exc) or (400, "the request body could not be read")
    err = EdgeError.http(status, message)
    err.close = True
    return err


def charge(request: web.Request, nbytes: int) -> None:
    """Count ``nbytes`` of the request's body against the process's budget until the request
    ends (``buffers_middleware``); 503 with Retry-After when they do not fit."""
    cost = nbytes * BUFFER_COST_FACTOR
    if not request.app[BUFFERS].try_take(cost):
        raise EdgeError(REASON_TABLE["overloaded"], "the gateway is holding as many request "
                        "bodies as its memory budget allows; retry shortly", reason="overloaded")
    request[STATE].held += cost


async def read_body(request: web.Request, limit: int, what: str = "the request body",
                    shown: int | None = None) -> bytes:
    """The request's body, bounded to ``limit`` bytes (413 naming ``what`` and the limit
    ``shown``) and counted against the process's budget as it arrives (all of a declared length
    at once)."""
    shown = limit if shown is None else shown
    too_large = f"{what} is larger than the limit of {shown} bytes"
    declared = request.content_length
    if declared is not None:
        if declared > limit:
            raise EdgeError.http(413, f"{what} is {declared} bytes; the limit is {shown}")
        charge(request, declared)
    counted = declared or 0  # a compressed body grows past its declared length
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise EdgeError.http(413, too_large)
            if size > counted:
                charge(request, size - counted)
                counted = size
            chunks.append(chunk)
    except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on bytes that are not gzip
        raise unreadable(exc) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: web.Request, limit: int) -> Any:
    """The request's JSON body, bounded to ``limit`` bytes; 415 for a body sent as another type."""
    if not is_json_type(request.headers.get("Content-Type")):
        raise EdgeError.http(415, "the request body must be JSON: send it with "
                                  "'Content-Type: application/json'")
    raw = await read_body(request, limit)
    if not raw.strip():
        raise EdgeError.bad_request("the request body is empty; expected JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EdgeError.bad_request(f"the request body is not valid JSON: {exc}") from None


async def read_object(request: web.Request, limit: int) -> dict[str, Any]:
    data = await read_json(request, limit)
    if not isinstance(data, dict):
        raise EdgeError.bad_request(
            f"the request body must be a JSON object; got {json_kind(data)}")
    return data


class Fields:
    """Typed access to a JSON object's fields; errors name the field by its full path."""

    __slots__ = ("data", "prefix")

    def __init__(self, data: dict[builtins.str, Any], prefix: builtins.str = "") -> None:
        self.data = data
        self.prefix = prefix

    def path(self, name: builtins.str) -> builtins.str:
        return f"{self.prefix}{name}"

    def _bad(self, name: builtins.str, expected: builtins.str, value: Any) -> EdgeError:
        return EdgeError.bad_request(
            f"'{self.path(name)}' must be {expected}; got {json_kind(value)} {shown(value, 60)}"
            if value is not None else f"'{self.path(name)}' must be {expected}",
            param=self.path(name),
        )

    def get(self, name: builtins.str) -> Any:
        return self.data.get(name)

    def required(self, name: builtins.str) -> Any:
        value = self.data.get(name)
        if value is None:
            raise EdgeError.bad_request(f"'{self.path(name)}' is required", param=self.path(name))
        return value

    def str(
        self, name: builtins.str, *, required: builtins.bool = False,
        default: builtins.str | None = None,
    ) -> builtins.str | None:
        value = self.required(name) if required else self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(name, "a string", value)
        return value

    def req_str(self, name: builtins.str) -> builtins.str:
        value = self.str(name, required=True)
        assert value is not None
        return value

    def float(
        self, name: builtins.str, lo: builtins.float | None = None, hi: builtins.float | None = None
    ) -> builtins.float | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._bad(name, _range("a number", lo, hi), value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise self._bad(name, _range("a number", lo, hi), value)
        return float(value)

    def int(
        self, name: builtins.str, lo: builtins.int | None = None, hi: builtins.int | None = None
    ) -> builtins.int | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._bad(name, _range("an integer", lo, hi), value)
        if (lo is not None and value < lo) or value > (MAX_INT if hi is None else hi):
            raise self._bad(name, _range("an integer", lo, MAX_INT if hi is None else hi), value)
        if value < INT64_MIN:
            raise self._bad(name, _range("an integer", INT64_MIN, hi), value)
        return value

    def bool(self, name: builtins.str, default: builtins.bool | None = None) -> builtins.bool | None:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(name, "a boolean", value)
        return value

    def str_or_list(self, name: builtins.str) -> builtins.list[builtins.str] | None:
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        raise self._bad(name, "a string or an array of strings", value)

    def obj(self, name: builtins.str) -> Fields | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._bad(name, "an object", value)
        return Fields(value, f"{self.path(name)}.")

    def list(self, name: builtins.str, *, required: builtins.bool = False) -> builtins.list[Any] | None:
        value = self.required(name) if required else self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self._bad(name, "an array", value)
        return value


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range(kind: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{kind} between {_num(lo)} and {_num(hi)}"
    if lo is not None:
        return f"{kind} >= {_num(lo)}"
    if hi is not None:
        return f"{kind} <= {_num(hi)}"
    return kind
