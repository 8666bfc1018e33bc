"""Admission against the limits of a request's caller and model, and the reconciliation after.

The servicer builds a ``Gate`` per request (``Limiter.gate``; None when nothing limits the
request). The route enters it before anything else and leaves it when the answer ends, with the
usage the answer reported (or, for a cancelled or failed stream, what it generated): the token
counters are then moved by the difference from the admission's estimate, and the request leaves
the concurrency sets. An admitted request's answer carries OpenAI's ``x-ratelimit-*`` headers of
the tightest requests and tokens limits that applied; a refused one gets 429 with Retry-After.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import math
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from gateway_common.config import GatewayConfig, RateLimits
from gateway_common.core_api import SHOULD_RETRY_KEY
from gateway_common.metrics import child
from gateway_core.errors import ErrorFields, LimitsUnavailable, RateLimited, retry_after_fields
from gateway_core.limits.counters import Check, Counters, Decision, MemoryCounters, State

log = logging.getLogger(__name__)

RATE_LIMITED = Counter("gateway_rate_limited_total",
                       "Requests refused by a rate limit or budget, by model and kind",
                       ["model", "kind"])
BACKEND_ERRORS = Counter("gateway_limits_backend_errors_total",
                         "Admissions decided without the shared counters (unreachable), by how",
                         ["outcome"])

WINDOW = 60.0
# Names of the requests in concurrency sets: unique per process (and so across replicas).
_LEASES = itertools.count()
_PROCESS = os.urandom(6).hex()
# Longest a request may hold a concurrency slot when its process dies with it.
MAX_LEASE = 3600.0
_WHAT = {"rpm": "requests per minute", "tpm": "tokens per minute",
         "max_concurrency": "requests in flight", "daily_tokens": "tokens per day",
         "monthly_tokens": "tokens per month"}


def duration(seconds: float) -> str:
    """OpenAI's form of a reset time: ``20ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def _period_end(now: datetime.datetime, month: bool) -> tuple[str, float]:
    """The key of the UTC day (or month) and seconds until it turns."""
    if month:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
        return now.strftime("%Y-%m"), (end - now).total_seconds()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.strftime("%Y-%m-%d"), (start + datetime.timedelta(days=1) - now).total_seconds()


class Limiter:
    """The process's limit counters and how to use them (see the module's docstring)."""

    def __init__(self, counters: Counters, *, fail_open: bool = True,
                 jwt_limits: RateLimits | None = None) -> None:
        self.counters = counters
        self.fail_open = fail_open
        self.jwt_limits = jwt_limits or RateLimits()
        self._down = False

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Limiter:
        limits = config.limits
        counters: Counters
        if limits.backend == "redis":
            import os

            from gateway_common.config import ConfigError
            from gateway_core.limits.redis_counters import RedisCounters

            url = os.environ.get(limits.redis_url_env)
            if not url:
                raise ConfigError("limits.redis_url_env",
                                  f"the environment variable {limits.redis_url_env} (the Redis "
                                  "URL) is not set")
            counters = RedisCounters(url, limits.redis_prefix)
        else:
            counters = MemoryCounters()
        return cls(counters, fail_open=limits.on_backend_error == "fail_open",
                   jwt_limits=config.auth.jwt.limits)

    def gate(self, model: str, model_limits: RateLimits, identity: Any,
             prompt_chars: Callable[[], int]) -> Gate | None:
        """The request's gate; None when neither its caller nor its model is limited."""
        parts: list[tuple[str, str, RateLimits]] = []
        if identity is not None:
            limits = getattr(identity, "limits", None)
            if limits is None and identity.kind == "jwt":
                limits = self.jwt_limits
            if limits is not None and limits.any():
                who = "JWT subject" if identity.kind == "jwt" else "token"
                parts.append((f"t:{identity.token_id}", f"{who} '{identity.name}'", limits))
        if model_limits.any():
            parts.append((f"m:{model}", f"model '{model}'", model_limits))
        if not parts:
            return None
        return Gate(self, model, parts, prompt_chars)

    async def remaining(self, token_id: str, limits: RateLimits) -> dict[str, int]:
        """What is left of each of a token's limits now (by limit name); empty when the
        counters cannot be read."""
        gate = Gate(self, "", [(f"t:{token_id}", "", limits)], lambda: 0)
        named = gate._checks(1.0)
        try:
            states = await self.counters.peek([c for c, *_ in named])
        except Exception as exc:
            log.debug("limit counters failed: %s", exc)
            return {}
        return {name: st.remaining for (_, name, _, _), st in zip(named, states, strict=True)}

    def decided(self, ok: bool) -> None:
        """The shared counters answered (ok) or not: log once per outage."""
        if ok:
            if self._down:
                self._down = False
                log.warning("the limit counters are reachable again")
            return
        if not self._down:
            self._down = True
            log.error("the limit counters cannot be reached: requests are %s until they are",
                      "admitted unlimited" if self.fail_open else "refused")

    async def close(self) -> None:
        await self.counters.close()


class Gate:
    """One request's limits (see the module's docstring)."""

    __slots__ = ("checks", "estimate", "headers", "lease", "limiter", "model", "parts",
                 "prompt_chars", "released")

    def __init__(self, limiter: Limiter, model: str, parts: list[tuple[str, str, RateLimits]],
                 prompt_chars: Callable[[], int]) -> None:
        self.limiter = limiter
        self.model = model
        self.parts = parts
        self.prompt_chars = prompt_chars
        self.checks: list[Check] = []
        self.estimate = 0
        self.headers: tuple[tuple[str, str], ...] = ()
        self.lease = ""
        self.released = True

    def _checks(self, deadline: float) -> list[tuple[Check, str, str, str]]:
        """(check, the limit's name, whose, kind label) for every limit that applies."""
        out = []
        now: datetime.datetime | None = None
        counts_tokens = any(p[2].tpm or p[2].daily_tokens or p[2].monthly_tokens
                            for p in self.parts)
        if counts_tokens:
            self.estimate = max(1, (self.prompt_chars() + 3) // 4)
        for key, who, lim in self.parts:
            if lim.rpm:
                # (a rate key names its limit: a changed limit starts afresh, as the TAT means
                # time at the old rate)
                out.append((Check(f"{key}:rpm:{lim.rpm}", "rate", lim.rpm, 1, WINDOW), "rpm",
                            who, "requests"))
            if lim.tpm:
                out.append((Check(f"{key}:tpm:{lim.tpm}", "rate", lim.tpm, self.estimate,
                                  WINDOW), "tpm", who, "tokens"))
            if lim.max_concurrency:
                out.append((Check(f"{key}:conc", "concurrency", lim.max_concurrency, 1,
                                  deadline), "max_concurrency", who, "concurrency"))
            if (lim.daily_tokens or lim.monthly_tokens) and now is None:
                now = datetime.datetime.now(datetime.UTC)
            if lim.daily_tokens:
                assert now is not None
                day, left = _period_end(now, month=False)
                out.append((Check(f"{key}:day:{day}", "budget", lim.daily_tokens, self.estimate,
                                  left), "daily_tokens", who, "budget"))
            if lim.monthly_tokens:
                assert now is not None
                month, left = _period_end(now, month=True)
                out.append((Check(f"{key}:month:{month}", "budget", lim.monthly_tokens,
                                  self.estimate, left), "monthly_tokens", who, "budget"))
        return out

    async def enter(self, deadline_seconds: float) -> None:
        """Admit the request or raise RateLimited (LimitsUnavailable when the counters cannot
        be reached and the gateway fails closed)."""
        named = self._checks(min(MAX_LEASE, max(1.0, deadline_seconds)))
        checks = [c for c, *_ in named]
        for c, name, who, kind in named:
            if c.kind == "rate" and c.cost > c.limit:
                self._refused(kind)
                raise RateLimited(
                    f"the request's {c.cost} estimated tokens exceed the {_WHAT[name]} limit of "
                    f"{who} ({c.limit}); it can never be admitted",
                    fields=ErrorFields(type="tokens", code="rate_limit_exceeded"),
                ).with_extra(((SHOULD_RETRY_KEY, "false"),))
        self.lease = f"{_PROCESS}-{next(_LEASES)}"
        try:
            decision: Decision = await self.limiter.counters.admit(checks, self.lease)
        except Exception as exc:
            self.limiter.decided(False)
            log.debug("limit counters failed: %s", exc)
            if self.limiter.fail_open:
                child(BACKEND_ERRORS, "admitted").inc()
                return
            child(BACKEND_ERRORS, "refused").inc()
            raise LimitsUnavailable("the gateway cannot check its limits right now; retry "
                                    "shortly", fields=retry_after_fields(1)) from None
        self.limiter.decided(True)
        if not decision.admitted:
            c, name, who, kind = named[decision.refused]
            self._refused(kind)
            if c.kind == "budget":
                raise RateLimited(
                    f"{who} has spent its budget of {c.limit} {_WHAT[name]}; it renews in "
                    f"{duration(decision.retry_after)}", reason="insufficient_quota",
                    fields=ErrorFields(type="insufficient_quota", code="insufficient_quota",
                                       retry_after=str(max(1, math.ceil(decision.retry_after)))),
                ).with_extra(((SHOULD_RETRY_KEY, "false"),))
            wait = max(0.001, decision.retry_after)
            raise RateLimited(
                f"{who} is over its limit of {c.limit} {_WHAT[name]}; retry in "
                f"{duration(wait)}",
                fields=ErrorFields(type=kind if kind in ("requests", "tokens") else None,
                                   code="rate_limit_exceeded",
                                   retry_after=str(max(1, math.ceil(wait)))),
            ).with_extra(((f"x-ratelimit-limit-{kind}", str(c.limit)),
                          (f"x-ratelimit-remaining-{kind}", "0"),
                          (f"x-ratelimit-reset-{kind}", duration(wait)))
                         if kind in ("requests", "tokens") else ())
        self.checks = checks
        self.released = False
        self.headers = self._headers(named, decision.states)

    def _refused(self, kind: str) -> None:
        child(RATE_LIMITED, self.model, kind).inc()

    @staticmethod
    def _headers(named: list[tuple[Check, str, str, str]], states: tuple[State, ...]
                 ) -> tuple[tuple[str, str], ...]:
        """OpenAI's x-ratelimit-* of the tightest requests and tokens rate limits."""
        out: list[tuple[str, str]] = []
        for kind in ("requests", "tokens"):
            best: tuple[Check, State] | None = None
            for (c, _, _, k), st in zip(named, states, strict=True):
                if k == kind and (best is None or st.remaining < best[1].remaining):
                    best = (c, st)
            if best is not None:
                out += [(f"x-ratelimit-limit-{kind}", str(best[0].limit)),
                        (f"x-ratelimit-remaining-{kind}", str(best[1].remaining)),
                        (f"x-ratelimit-reset-{kind}", duration(best[1].reset))]
        return tuple(out)

    def leave(self, total_tokens: int | None) -> None:
        """The answer ended: ``total_tokens`` it used (prompt and completion; None when unknown:
        the estimate stands). Reconciles the token counters and frees the concurrency slot, off
        the request's path."""
        if self.released:
            return
        self.released = True
        deltas = [0] * len(self.checks)
        if total_tokens is not None:
            for i, c in enumerate(self.checks):
                if c.kind == "budget" or (c.kind == "rate" and ":tpm:" in c.key):
                    deltas[i] = total_tokens - self.estimate
        conc = [c.key for c in self.checks if c.kind == "concurrency"]
        if not (any(deltas) or conc):
            return
        counters = self.limiter.counters
        try:
            if any(deltas):
                counters.adjust_now(self.checks, deltas)
            if conc:
                counters.release_now(conc, self.lease)
        except Exception as exc:
            log.debug("limit counters failed at reconciliation: %s", exc)
