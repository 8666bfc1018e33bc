"""Pure translation for the ``mlflow`` dialect (seed 002, and MLflow's AI gateway as
``mlflow.deployments`` calls it).

An MLflow endpoint is a gateway model (by id or alias) of a chat, completion or embedding task.
Invocation bodies are OpenAI's without ``model`` (the path names the endpoint), answered in OpenAI's
shapes, as MLflow's gateway does. Errors are FastAPI's ``{"detail": "..."}`` with MLflow's
``error_code`` beside it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from http_edge.errors import EdgeError
from http_edge.sse import DONE, frame
from inference_gateway.v1 import inference_pb2 as pb

ENDPOINT_TYPES: dict[int, str] = {
    pb.TASK_CHAT: "llm/v1/chat",
    pb.TASK_COMPLETION: "llm/v1/completions",
    pb.TASK_EMBEDDING: "llm/v1/embeddings",
}
# MLflow's page size for GET /api/2.0/endpoints/.
PAGE_SIZE = 3000

# The invocation body's key → the task it asks for.
BODY_TASKS = {"messages": "chat", "prompt": "completion", "input": "embedding"}
EXPECTED_KEY = {pb.TASK_CHAT: "messages", pb.TASK_COMPLETION: "prompt",
                pb.TASK_EMBEDDING: "input"}

ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    422: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    499: "CANCELLED",
    501: "NOT_IMPLEMENTED",
    502: "TEMPORARILY_UNAVAILABLE",  # the upstream failed (MLflow has no code of its own)
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def endpoint_url(name: str) -> str:
    """Relative to the base URL, as MLflow's gateway answers (its client resolves it)."""
    return f"/gateway/{name}/invocations"


def endpoint_json(name: str, model: pb.Model) -> dict[str, Any]:
    return {
        "name": name,
        "endpoint_type": ENDPOINT_TYPES.get(model.task, "llm/v1/chat"),
        "model": {"name": model.upstream_model or model.id, "provider": model.provider},
        "endpoint_url": endpoint_url(name),
        "limit": None,
    }


def is_endpoint(model: pb.Model) -> bool:
    return model.task in ENDPOINT_TYPES


def encode_token(index: int) -> str:
    return base64.b64encode(orjson.dumps({"index": index})).decode("ascii")


def decode_token(token: str) -> int:
    """A page token (MLflow's: base64 of ``{"index": n}``) → the index it points at."""
    try:
        index = orjson.loads(base64.b64decode(token, validate=True))["index"]
    except (binascii.Error, orjson.JSONDecodeError, TypeError, KeyError, ValueError):
        index = None
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise EdgeError.bad_request(f"invalid page_token {token[:60]!r}", param="page_token")
    return index


def endpoints_page(models: list[pb.Model], start: int, size: int = PAGE_SIZE) -> dict[str, Any]:
    served = [m for m in models if is_endpoint(m)]
    out: dict[str, Any] = {
        "endpoints": [endpoint_json(m.id, m) for m in served[start:start + size]]
    }
    if start + size < len(served):
        out["next_page_token"] = encode_token(start + size)
    return out


def body_task(body: dict[str, Any]) -> str | None:
    """The task an invocation body asks for, by its key (``messages``, ``prompt``, ``input``)."""
    for key, task in BODY_TASKS.items():
        if body.get(key) is not None:
            return task
    return None


def error_json(err: EdgeError, request_id: str) -> dict[str, Any]:
    code = ERROR_CODES.get(err.status, "INTERNAL_ERROR" if err.status >= 500 else "BAD_REQUEST")
    return {"detail": err.message, "error_code": code}


def stream_error(err: EdgeError, request_id: str) -> bytes:
    return frame(orjson.dumps(error_json(err, request_id))) + DONE
