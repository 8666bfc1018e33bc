"""The core's access log lines: one per inference call of a gRPC caller (the edge's calls are
logged by the edge, which knows more of them). Written by the metrics interceptor, which wraps
every call already. Fields as in ``gateway_common.access_log``."""

from __future__ import annotations

import time
from typing import Any

from grpc import aio

from gateway_common import access_log
from gateway_common.core_api import (
    ATTEMPTS_KEY,
    END_USER_LOG_KEY,
    ENDPOINT_LOG_KEY,
    FROM_EDGE_KEY,
    MODEL_KEY,
    REASON_KEY,
    REQUEST_ID_KEY,
    SERVED_MODEL_KEY,
    TOKEN_LOG_KEY,
    USAGE_LOG_KEY,
)

Ctx = aio.ServicerContext[Any, Any]
INFERENCE = "/inference_gateway.v1.Inference/"
METHODS = frozenset({"Chat", "ChatStream", "Complete", "CompleteStream", "Embed", "Rerank",
                     "Classify", "Transcribe", "TranscribeStream", "GetSpeechSchema",
                     "GenerateSpeech", "GenerateImage", "Translate", "Predict"})


def wanted(method: str, context: Ctx) -> bool:
    """Whether this call gets a line from the core: an inference call (``method`` as the
    interceptors name it: ``Chat``) not made by the edge."""
    if method not in METHODS or not access_log.enabled():
        return False
    return not any(k == FROM_EDGE_KEY for k, _ in context.invocation_metadata() or ())


def write(method: str, context: Ctx, started: float, status: str, ttft: float | None) -> None:
    full_method = INFERENCE + method
    md = dict(context.invocation_metadata() or ())
    trailers = {k: v for k, v in (context.trailing_metadata() or ()) if isinstance(v, str)}
    usage = trailers.get(USAGE_LOG_KEY, "")
    prompt, _, completion = usage.partition(",")
    attempts = trailers.get(ATTEMPTS_KEY)
    access_log.write({
        "request_id": md.get(REQUEST_ID_KEY) or None, "dialect": "grpc", "route": full_method,
        "model": trailers.get(MODEL_KEY) or None,
        "served_model": trailers.get(SERVED_MODEL_KEY),
        "endpoint": trailers.get(ENDPOINT_LOG_KEY),
        "attempts": int(attempts) if attempts and attempts.isdigit() else None,
        "status": status, "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        "ttft_ms": round(ttft * 1000, 2) if ttft is not None else None,
        "prompt_tokens": int(prompt) if prompt.isdigit() else None,
        "completion_tokens": int(completion) if completion.isdigit() else None,
        "token_id": trailers.get(TOKEN_LOG_KEY), "end_user": trailers.get(END_USER_LOG_KEY),
        "error": trailers.get(REASON_KEY) if status != "OK" else None,
    })
