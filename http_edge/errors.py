"""The one table from gRPC status (and the core's ``igw-reason``) to HTTP, and the edge's error type.

Every dialect renders an ``EdgeError`` in its own shape (``Dialect.error_body``); the status code,
the OpenAI-style type and code, and whether clients should retry come from here only.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from grpc import aio

from gateway_common.core_api import (
    ERROR_CODE_KEY,
    ERROR_PARAM_KEY,
    ERROR_TYPE_KEY,
    REASON_KEY,
    RETRY_AFTER_KEY,
)


@dataclass(frozen=True, slots=True)
class ErrorKind:
    status: int
    type: str
    code: str | None = None
    # False tells SDKs that honour ``x-should-retry`` not to retry (a retry cannot help).
    retry: bool = True
    # Seconds for a Retry-After header (None: no header).
    retry_after: int | None = None


# Exhaustive over grpc.StatusCode (a test checks it).
STATUS_TABLE: dict[grpc.StatusCode, ErrorKind] = {
    grpc.StatusCode.OK: ErrorKind(200, "ok"),
    grpc.StatusCode.CANCELLED: ErrorKind(499, "cancelled", "client_closed_request", retry=False),
    grpc.StatusCode.UNKNOWN: ErrorKind(500, "api_error", "internal_error"),
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind(400, "invalid_request_error", None, retry=False),
    grpc.StatusCode.DEADLINE_EXCEEDED: ErrorKind(504, "timeout_error", "timeout", retry=False),
    grpc.StatusCode.NOT_FOUND: ErrorKind(404, "not_found_error", "not_found", retry=False),
    grpc.StatusCode.ALREADY_EXISTS: ErrorKind(409, "conflict_error", "already_exists", False),
    grpc.StatusCode.PERMISSION_DENIED: ErrorKind(403, "permission_error", "permission_denied",
                                                 retry=False),
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorKind(429, "rate_limit_error", "rate_limit_exceeded"),
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind(400, "invalid_request_error",
                                                   "failed_precondition", retry=False),
    grpc.StatusCode.ABORTED: ErrorKind(409, "conflict_error", "aborted"),
    grpc.StatusCode.OUT_OF_RANGE: ErrorKind(400, "invalid_request_error", "out_of_range", False),
    grpc.StatusCode.UNIMPLEMENTED: ErrorKind(501, "invalid_request_error", "unsupported",
                                             retry=False),
    grpc.StatusCode.INTERNAL: ErrorKind(500, "api_error", "internal_error"),
    grpc.StatusCode.UNAVAILABLE: ErrorKind(503, "service_unavailable", "service_unavailable"),
    grpc.StatusCode.DATA_LOSS: ErrorKind(500, "api_error", "data_loss"),
    grpc.StatusCode.UNAUTHENTICATED: ErrorKind(401, "authentication_error", "invalid_api_key",
                                               retry=False),
}

# Finer reasons the core names in the ``igw-reason`` trailer.
REASON_TABLE: dict[str, ErrorKind] = {
    "model_not_found": ErrorKind(404, "invalid_request_error", "model_not_found", retry=False),
    "task_mismatch": ErrorKind(400, "invalid_request_error", "task_mismatch", retry=False),
    "payload_too_large": ErrorKind(413, "invalid_request_error", "payload_too_large", False),
    "unsupported_media_type": ErrorKind(415, "invalid_request_error", "unsupported_media_type",
                                        retry=False),
    "upstream_error": ErrorKind(502, "upstream_error", "bad_gateway"),
    "upstream_rejected": ErrorKind(400, "invalid_request_error", "upstream_rejected", False),
    # The upstream's 413 and 422 keep their status (its 400 is upstream_rejected).
    "upstream_too_large": ErrorKind(413, "invalid_request_error", "payload_too_large", False),
    "upstream_unprocessable": ErrorKind(422, "invalid_request_error", "unprocessable_entity",
                                        retry=False),
    "upstream_timeout": ErrorKind(504, "timeout_error", "timeout", retry=False),
    "rate_limited": ErrorKind(429, "rate_limit_error", "rate_limit_exceeded"),
    "overloaded": ErrorKind(503, "overloaded_error", "overloaded", retry_after=1),
    "auth_store_unavailable": ErrorKind(503, "service_unavailable", "auth_store_unavailable"),
    # The traffic layer (SPEC §10): every endpoint of the pool is ejected or down, or the model
    # is at its concurrency limit; both with Retry-After from the core.
    "no_healthy_upstream": ErrorKind(503, "service_unavailable", "no_healthy_upstream"),
    "model_busy": ErrorKind(429, "rate_limit_error", "model_busy"),
    # Limits (SPEC §11): a token's or model's rate limit, a spent budget, shared counters down.
    "rate_limit_exceeded": ErrorKind(429, "rate_limit_error", "rate_limit_exceeded"),
    "insufficient_quota": ErrorKind(429, "insufficient_quota", "insufficient_quota",
                                    retry=False),
    "limits_unavailable": ErrorKind(503, "service_unavailable", "limits_unavailable"),
}

# HTTP status → kind, for errors the edge raises itself.
HTTP_KINDS: dict[int, ErrorKind] = {
    400: ErrorKind(400, "invalid_request_error", None, retry=False),
    401: ErrorKind(401, "authentication_error", "invalid_api_key", retry=False),
    403: ErrorKind(403, "permission_error", "permission_denied", retry=False),
    404: ErrorKind(404, "not_found_error", "not_found", retry=False),
    405: ErrorKind(405, "invalid_request_error", "method_not_allowed", retry=False),
    413: ErrorKind(413, "invalid_request_error", "payload_too_large", retry=False),
    415: ErrorKind(415, "invalid_request_error", "unsupported_media_type", retry=False),
    500: ErrorKind(500, "api_error", "internal_error"),
    503: ErrorKind(503, "service_unavailable", "service_unavailable"),
}


class EdgeError(Exception):
    """An error to answer in the request's dialect.

    ``type`` and ``code`` are the kind's unless the upstream named its own (an upstream's
    ``{"error": {"type", "param", "code"}}`` reaches the client as it was); ``retry_after`` is
    sent as the ``Retry-After`` header.
    """

    def __init__(self, kind: ErrorKind, message: str, *, param: str | None = None,
                 reason: str | None = None, type: str | None = None, code: str | None = None,
                 retry_after: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.type = type or kind.type
        self.code = code or kind.code
        self.retry_after = retry_after
        # Bounded label for metrics.
        self.reason = reason or kind.code or kind.type
        # Close the connection after the answer (the request could not be read to its end).
        self.close = False

    @property
    def status(self) -> int:
        return self.kind.status

    @classmethod
    def http(cls, status: int, message: str, *, param: str | None = None) -> EdgeError:
        return cls(HTTP_KINDS[status], message, param=param)

    @classmethod
    def bad_request(cls, message: str, param: str | None = None) -> EdgeError:
        return cls(HTTP_KINDS[400], message, param=param, reason="invalid_request")


def from_rpc_error(exc: aio.AioRpcError) -> EdgeError:
    """The edge's view of a failed core call."""
    code = exc.code()
    trailers = {key: value for key, value in exc.trailing_metadata() or ()
                if isinstance(value, str)}
    reason = trailers.get(REASON_KEY, "")
    kind = REASON_TABLE.get(reason) or STATUS_TABLE.get(code) or STATUS_TABLE[grpc.StatusCode.UNKNOWN]
    message = exc.details() or code.name.lower()
    if code == grpc.StatusCode.UNAVAILABLE and not reason:
        message = "the gateway core is unavailable"
        reason = "core_unavailable"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED and not reason:
        message = "the request timed out (deadline exceeded)"
    return EdgeError(kind, message, reason=reason or code.name.lower(),
                     param=trailers.get(ERROR_PARAM_KEY), type=trailers.get(ERROR_TYPE_KEY),
                     code=trailers.get(ERROR_CODE_KEY), retry_after=trailers.get(RETRY_AFTER_KEY))
