"""The access log: one line per request (SPEC §13), JSON by default, on the logger
``gateway.access`` (stdout, set up by the CLI; ``access_log: off`` silences it).

A line holds: time, request id, dialect, route (its template, not the raw path), model (the one
the request resolved to) and the model that served it, the upstream endpoint of the last attempt,
attempts, status, duration and time to first token in ms, prompt and completion tokens, the token
id (never a secret), the end user, and the error reason. The edge writes one per HTTP request; the
core writes one per gRPC call that did not come from the edge.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

log = logging.getLogger("gateway.access")

# Whether lines are JSON (else key=value text).
_json = True


def setup(mode: str) -> None:
    """``json``, ``text`` or ``off``: lines on stdout, each one message (no prefix)."""
    global _json
    log.propagate = False
    log.handlers.clear()
    if mode == "off":
        log.disabled = True
        return
    _json = mode == "json"
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.disabled = False


def enabled() -> bool:
    return not log.disabled and log.isEnabledFor(logging.INFO)


def write(fields: dict[str, Any]) -> None:
    """One line; fields that are None are left out."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            + f".{int(time.time() * 1000) % 1000:03d}Z",
            **{k: v for k, v in fields.items() if v is not None}}
    if _json:
        log.info(orjson.dumps(line).decode())
    else:
        log.info(" ".join(f"{k}={v}" for k, v in line.items()))
