"""Authentication failures: the bounded reasons, their metric, and the errors they raise.

Messages say what is wrong with the credential, never what it was: no part of a secret reaches an
error, a log line or a label.
"""

from __future__ import annotations

from prometheus_client import Counter

from gateway_core.errors import PermissionDenied, Unauthenticated

# reason → the message the caller sees.
UNAUTHENTICATED = {
    "missing": "an access token is required: send 'Authorization: Bearer <token>'",
    "malformed": "the credential is malformed: send 'Authorization: Bearer <token>'",
    "unknown": "the access token is not valid",
    "expired": "the access token has expired",
    "revoked": "the access token was revoked",
    "jwt_invalid": "the JWT is not valid",
    "jwt_expired": "the JWT has expired",
    "jwt_not_yet_valid": "the JWT is not valid yet",
    "jwt_issuer": "the JWT has the wrong issuer",
    "jwt_audience": "the JWT has the wrong audience",
    "jwt_signature": "the JWT signature is not valid",
    "jwt_algorithm": "the JWT is signed with an algorithm the gateway does not accept",
    "admin_required": "this call needs the admin credential",
}
FORBIDDEN = "forbidden_model"
REASONS = (*UNAUTHENTICATED, FORBIDDEN)

AUTH_FAILURES = Counter(
    "gateway_auth_failures_total", "Requests refused by authentication or model scope, by reason.",
    ["reason"],
)
for _reason in REASONS:
    AUTH_FAILURES.labels(_reason)  # every series present from the start, at 0


def unauthenticated(reason: str) -> Unauthenticated:
    """Count the failure and build the error (reason must be one of ``UNAUTHENTICATED``)."""
    AUTH_FAILURES.labels(reason).inc()
    return Unauthenticated(UNAUTHENTICATED[reason], reason=f"auth_{reason}")


def forbidden(model: str) -> PermissionDenied:
    AUTH_FAILURES.labels(FORBIDDEN).inc()
    shown = model if len(model) <= 200 else model[:200] + "..."
    return PermissionDenied(f"this access token may not call the model '{shown}'",
                            reason=f"auth_{FORBIDDEN}")
