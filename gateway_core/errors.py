"""The core's one error hierarchy.

Providers and servicers raise these; the error interceptor (``interceptors.py``) turns them into an
aborted RPC with the status code and, for HTTP callers, a finer ``igw-reason`` trailer. Nothing here
imports grpc: each error names its status code by the name of ``grpc.StatusCode``, so providers
can raise them without knowing the transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway_common.core_api import (
    ERROR_CODE_KEY,
    ERROR_PARAM_KEY,
    ERROR_TYPE_KEY,
    RETRY_AFTER_KEY,
)
from gateway_common.core_api import REASON_KEY as REASON_KEY  # the trailer that names a reason

MAX_FIELD_CHARS = 128


def trailer_value(value: object) -> str | None:
    """``value`` when it can travel as a trailer: a non-empty string of printable ASCII, at most
    ``MAX_FIELD_CHARS`` long. Anything else (llama.cpp's integer ``code``, which repeats the HTTP
    status; text with newlines or non-ASCII) is None: absent rather than mangled."""
    if isinstance(value, str) and 0 < len(value) <= MAX_FIELD_CHARS and value.isascii() \
            and value.isprintable():
        return value
    return None


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """What an upstream said about its error besides the message: OpenAI's ``type``, ``param``
    and ``code``, each a ``trailer_value`` or None, and its ``Retry-After``."""

    type: str | None = None
    param: str | None = None
    code: str | None = None
    retry_after: str | None = None

    def trailers(self) -> tuple[tuple[str, str], ...]:
        pairs = ((ERROR_TYPE_KEY, self.type), (ERROR_PARAM_KEY, self.param),
                 (ERROR_CODE_KEY, self.code), (RETRY_AFTER_KEY, self.retry_after))
        return tuple((k, v) for k, v in pairs if v is not None)


NO_FIELDS = ErrorFields()


class GatewayError(Exception):
    """Base of every error the core reports to its callers."""

    code: str = "INTERNAL"
    reason: str = "internal"

    def __init__(self, message: str, *, reason: str | None = None,
                 fields: ErrorFields = NO_FIELDS) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        # The upstream's own error fields, passed on to the caller as trailers.
        self.fields = fields
        # More trailers: what the traffic layer tried (served model, attempts, should-retry).
        self.extra: tuple[tuple[str, str], ...] = ()

    def with_extra(self, extra: tuple[tuple[str, str], ...]) -> GatewayError:
        """This error with ``extra`` trailers (for ``raise ... .with_extra(...)``)."""
        self.extra = (*self.extra, *extra)
        return self

    def trailers(self) -> tuple[tuple[str, str], ...]:
        """The trailing metadata of the aborted RPC: the reason, the upstream's fields, then
        what the traffic layer adds."""
        return ((REASON_KEY, self.reason), *self.fields.trailers(), *self.extra)


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

    def __init__(self, message: str, *, kind: str = "error", reason: str | None = None,
                 fields: ErrorFields = NO_FIELDS, status: int = 0) -> None:
        super().__init__(message, reason=reason, fields=fields)
        # Bounded label for metrics: connect, status, protocol, timeout.
        self.kind = kind
        # The upstream's HTTP status, when it answered one (a 5xx); 0 otherwise.
        self.status = status


class UpstreamRejected(GatewayError):
    """The upstream refused the request as invalid (400, 413, 422): the caller's fault. The
    reason keeps the upstream's status for HTTP callers: ``upstream_rejected`` (400),
    ``upstream_too_large`` (413), ``upstream_unprocessable`` (422)."""

    code = "INVALID_ARGUMENT"
    reason = "upstream_rejected"


class UpstreamRateLimited(GatewayError):
    code = "RESOURCE_EXHAUSTED"
    reason = "rate_limited"


class UpstreamTimeout(GatewayError):
    """The deadline, or one stage's timeout, passed while waiting on the upstream. ``stage``
    names which: ``connect``, ``headers``, ``first_token``, ``idle`` or ``deadline``."""

    code = "DEADLINE_EXCEEDED"
    reason = "upstream_timeout"

    def __init__(self, message: str, *, stage: str = "deadline",
                 fields: ErrorFields = NO_FIELDS) -> None:
        super().__init__(message, fields=fields)
        self.stage = stage


class Overloaded(GatewayError):
    """The gateway has no room for the request now (its budget of buffered bytes is spent): 503
    with ``Retry-After``."""

    code = "RESOURCE_EXHAUSTED"
    reason = "overloaded"


class NoHealthyUpstream(GatewayError):
    """Every endpoint of the model's pool is ejected or down: 503 at once, with Retry-After
    (the time until the first one may be tried again)."""

    code = "UNAVAILABLE"
    reason = "no_healthy_upstream"


class RateLimited(GatewayError):
    """A token, JWT subject or model is over one of its limits (``rate_limit_exceeded``) or has
    spent its budget for the period (``insufficient_quota``): 429 with Retry-After."""

    code = "RESOURCE_EXHAUSTED"
    reason = "rate_limit_exceeded"


class LimitsUnavailable(GatewayError):
    """The shared limit counters cannot be reached and the gateway is set to ``fail_closed``."""

    code = "UNAVAILABLE"
    reason = "limits_unavailable"


class ModelBusy(GatewayError):
    """The model is at its ``max_concurrency`` and the request could not wait (its queue is
    full, it was shed for a request of a higher class, or ``queue_timeout`` passed): 429 with
    Retry-After."""

    code = "RESOURCE_EXHAUSTED"
    reason = "model_busy"


def retry_after_fields(seconds: float) -> ErrorFields:
    """``Retry-After`` of at least one whole second."""
    return ErrorFields(retry_after=str(max(1, int(seconds + 0.999))))
