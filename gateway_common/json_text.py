"""How an error message names and shows a JSON value (shared by the edge and the core)."""

from __future__ import annotations

from typing import Any

import orjson


def json_kind(value: Any, *, integers: bool = False) -> str:
    """"null", "a boolean", "a number" ("an integer" too, with ``integers``), "a string",
    "an array" or "an object"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int) and integers:
        return "an integer"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def shown(value: Any, limit: int) -> str:
    """``value`` as a message quotes it: JSON (a string in quotes), cut to ``limit`` characters."""
    try:
        text = repr(value) if isinstance(value, str) else orjson.dumps(value).decode()
    except TypeError:  # an integer beyond 64 bits
        text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."
