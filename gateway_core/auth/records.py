"""Token secrets and the records the stores keep.

A secret is ``igw_`` plus 43 URL-safe characters (32 random bytes, 256 bits): the prefix lets
secret scanners find leaked ones. Only the SHA-256 of the secret is stored; the token is found by
that hash and the hash is compared again in constant time. The admin credential has its own prefix
``igw_admin_`` so that it can never pass for a model token.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway_common.config import RateLimits

PREFIX = "igw_"
ADMIN_PREFIX = "igw_admin_"
ALL_MODELS = "*"
_SECRET_RE = re.compile(r"igw_[A-Za-z0-9_-]{43}")
# How many characters of a secret are kept to recognise it ("igw_" + 4).
SHOWN_CHARS = 8


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_admin_secret() -> str:
    return ADMIN_PREFIX + secrets.token_urlsafe(32)


def new_token_id() -> str:
    return "tok_" + secrets.token_hex(8)


def is_token_secret(value: str) -> bool:
    """True when ``value`` has the exact shape of a model token's secret."""
    return _SECRET_RE.fullmatch(value) is not None


def hash_secret(secret: str) -> str:
    """The stored form of a secret (hex SHA-256). 256 random bits need no salt or slow hash."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored access token (never the secret)."""

    id: str
    name: str
    prefix: str
    # Hex SHA-256 of the secret.
    hash: str
    # Model ids, or ("*",) for every model.
    models: tuple[str, ...]
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None
    # What it may use (SPEC §11) and its highest priority class.
    limits: RateLimits = field(default_factory=RateLimits)
    priority: str = "standard"

    def allows(self, model_id: str) -> bool:
        return ALL_MODELS in self.models or model_id in self.models

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(now) else "active"


LIMIT_FIELDS = ("rpm", "tpm", "max_concurrency", "daily_tokens", "monthly_tokens")


def limits_to_json(limits: RateLimits) -> dict[str, int]:
    return {k: getattr(limits, k) for k in LIMIT_FIELDS if getattr(limits, k) is not None}


def limits_from_json(data: Any) -> RateLimits:
    if not isinstance(data, dict):
        return RateLimits()
    return RateLimits(**{k: int(v) for k, v in data.items() if k in LIMIT_FIELDS
                         and isinstance(v, int | float) and v > 0})


class UsageRecord(NamedTuple):
    """One request as accounted: who, which model and task, how much, how it ended. A named
    tuple, made on every request: about five times cheaper to build than a frozen dataclass."""

    ts: float
    token_id: str
    model: str
    task: str
    prompt_tokens: int
    completion_tokens: int
    # The gRPC status code name ("OK", "INVALID_ARGUMENT", ...).
    status: str
    latency_ms: float
    end_user: str = ""
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """Usage totals over a window for one token and/or model."""

    token_id: str
    token_name: str
    model: str
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    mean_latency_ms: float
    end_users: int

