"""Who is calling: set by the auth interceptor for the rest of the call (logs, usage, listings)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from gateway_common.config import RateLimits
from gateway_core.auth.records import ALL_MODELS


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: a stored access token or a JWT subject."""

    # "tok_..." for a stored token, "jwt:<subject>" for a JWT.
    token_id: str
    name: str
    # Model ids it may call; None for every model.
    models: frozenset[str] | None
    kind: str = "token"
    # Its own limits (None: a JWT subject's come from config) and highest priority class.
    limits: RateLimits | None = None
    priority: str = "standard"

    @classmethod
    def of_models(cls, token_id: str, name: str, models: tuple[str, ...] | list[str],
                  kind: str = "token", limits: RateLimits | None = None,
                  priority: str = "standard") -> Identity:
        allowed = None if ALL_MODELS in models else frozenset(models)
        return cls(token_id, name, allowed, kind, limits, priority)

    def allows(self, model_id: str) -> bool:
        return self.models is None or model_id in self.models


# The caller of the current RPC; None when auth is off (or before the auth interceptor ran).
current_identity: ContextVar[Identity | None] = ContextVar("current_identity", default=None)
