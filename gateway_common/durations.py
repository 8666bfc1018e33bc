"""Durations and expiry times as people type them: ``30d``, ``12h``, ``2027-01-31``, ``never``.

Shared by the CLI, the edge's admin routes and the core.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` or a bare number of seconds."""
    m = _DURATION_RE.fullmatch(text.strip().lower())
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 90m or 3600s")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str) -> float:
    """Unix seconds from a number of seconds or an ISO date or date-time (UTC unless it says)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give Unix seconds or an ISO date "
                         "(2027-01-31 or 2027-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_expiry(text: str, now: float | None = None) -> float | None:
    """An expiry as Unix seconds: a duration from now (``30d``), an ISO date or date-time, or
    ``never`` (None). Raises ValueError with a message for the user."""
    text = text.strip()
    if text.lower() in ("never", "none", ""):
        return None
    now = time.time() if now is None else now
    try:
        return now + parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an expiry: give a duration (30d, 12h, 90m), an ISO date "
            "(2027-01-31) or 'never'") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
