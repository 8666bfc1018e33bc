"""The core's one error hierarchy.

Providers and servicers raise these; the error interceptor (``interceptors.py``) turns them into an
aborted RPC with the status code and, for HTTP callers, a finer ``igw-reason`` trailer. Nothing here
imports grpc: each error names its status code by the name of ``grpc.StatusCode``, so providers
can raise them without knowing the transport.
"""

from __future__ import annotations

from gateway_common.core_api import REASON_KEY as REASON_KEY  # the trailer that names a reason


class GatewayError(Exception):
    """Base of every error the core reports to its callers."""

    code: str = "INTERNAL"
    reason: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidRequest(GatewayError):
    """The request is malformed or breaks a rule (a wrong type, a missing field)."""

    code = "INVALID_ARGUMENT"
    reason = "invalid_request"


class TaskMismatch(InvalidRequest):
    """The model exists but serves another task."""

    reason = "task_mismatch"


class PayloadTooLarge(InvalidRequest):
    reason = "payload_too_large"


class UnsupportedMediaType(InvalidRequest):
    reason = "unsupported_media_type"


class ModelNotFound(GatewayError):
    code = "NOT_FOUND"
    reason = "model_not_found"


class NotFound(GatewayError):
    code = "NOT_FOUND"
    reason = "not_found"


class Unauthenticated(GatewayError):
    code = "UNAUTHENTICATED"
    reason = "unauthenticated"


class PermissionDenied(GatewayError):
    code = "PERMISSION_DENIED"
    reason = "permission_denied"


class Unsupported(GatewayError):
    """The model's provider cannot do what was asked (e.g. a parameter it has no way to pass)."""

    code = "UNIMPLEMENTED"
    reason = "unsupported"


class UpstreamError(GatewayError):
    """The upstream failed: refused the connection, answered 5xx, or answered something unparsable."""

    code = "UNAVAILABLE"
    reason = "upstream_error"

    def __init__(self, message: str, *, kind: str = "error", reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        # Bounded label for metrics: connect, status, protocol, timeout.
        self.kind = kind


class UpstreamRejected(GatewayError):
    """The upstream refused the request as invalid (4xx): the caller's fault, passed on as 400."""

    code = "INVALID_ARGUMENT"
    reason = "upstream_rejected"


class UpstreamRateLimited(GatewayError):
    code = "RESOURCE_EXHAUSTED"
    reason = "rate_limited"


class UpstreamTimeout(GatewayError):
    """The deadline passed while waiting on the upstream."""

    code = "DEADLINE_EXCEEDED"
    reason = "upstream_timeout"
