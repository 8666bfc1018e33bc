"""Typed app and request state: the keys every edge module shares."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gateway_common.budget import ByteBudget
from gateway_common.config import GatewayConfig

if TYPE_CHECKING:
    from http_edge.core_client import CoreClient
    from http_edge.errors import EdgeError


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one HTTP dialect shapes its errors (in a body, and as a mid-stream SSE event)."""

    name: str
    # (error, request id) → JSON-able body.
    error_body: Callable[[EdgeError, str], Any]
    # (error, request id) → the bytes of the SSE frames that end a failed stream.
    stream_error: Callable[[EdgeError, str], bytes]


@dataclass(slots=True)
class RequestState:
    """What a request's handler learns, for the metrics middleware to record."""

    dialect: str
    request_id: str
    task: str = "-"
    model: str = "-"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Seconds the core reported waiting on the upstream (None when unknown).
    upstream_seconds: float | None = None
    # Seconds from the request's arrival to the first streamed token.
    ttft: float | None = None
    error_reason: str | None = None
    # The endpoint id of an endpoint-dialect request: sent to the core, which checks it.
    endpoint: str | None = None
    # Set by the TGI routes and the oicm ``inputs`` form: text generation on the model itself,
    # which a chat model serves whatever its ``tasks`` (sent to the core as ``igw-generate``).
    generating: bool = False
    # Bytes of the process's buffer budget this request holds (its body), given back at its end.
    held: int = 0
    # What served it, as the core said (x-gateway-model, x-gateway-attempts), and whether the
    # core said a retry by the client cannot help.
    served_model: str | None = None
    attempts: str | None = None
    no_retry: bool = False
    # OpenAI's x-ratelimit-* headers of a limited caller, as the core said.
    ratelimit: tuple[tuple[str, str], ...] = ()
    # For the access log, as the core said: the endpoint of the last attempt, the token id, the
    # end user, the tokens (prompt, completion).
    upstream_endpoint: str | None = None
    token_id: str | None = None
    end_user: str | None = None
    tokens: tuple[int, int] | None = None
    # Tracing (on): the edge's span, and its W3C traceparent for the core.
    span: Any = None
    traceparent: str | None = None

    def served_headers(self, headers: MutableMapping[str, str]) -> None:
        if self.served_model is not None:
            headers["x-gateway-model"] = self.served_model
        if self.attempts is not None:
            headers["x-gateway-attempts"] = self.attempts
        for key, value in self.ratelimit:
            headers[key] = value


# A model route's label until the core names the model the request resolved to (it stays when
# the core never does: an unknown model, a refused credential).
MODEL_UNRESOLVED = "unknown"

CONFIG = web.AppKey("config", GatewayConfig)
CORE: web.AppKey[CoreClient] = web.AppKey("core")
ROUTE_DIALECTS = web.AppKey("route_dialects", dict[Any, Dialect])
BUFFERS = web.AppKey("buffers", ByteBudget)
STATE = web.RequestKey("igw_state", RequestState)
STARTED = web.RequestKey("igw_started", float)
