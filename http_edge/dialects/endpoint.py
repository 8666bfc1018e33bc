"""The ``endpoint`` dialect (seed 001): OpenAI's API under ``/v2/{endpoint_id}/openai/v1``.

Bodies and answers are OpenAI's (``openai_wire``). The endpoint id travels to the core as metadata
``igw-endpoint``; the core checks that the endpoint exists and serves the requested model (config
``endpoints``), so the edge keeps no table of its own.
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway_common.core_api import LIST_MODELS
from http_edge.body import read_object
from http_edge.dialects import openai
from http_edge.dialects import openai_wire as wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.state import CONFIG, STATE, Dialect
from inference_gateway.v1 import inference_pb2 as pb

BASE = "/v2/{endpoint_id}/openai/v1"
# Endpoint ids are sent as gRPC metadata: printable ASCII, bounded.
_ENDPOINT_ID = re.compile(r"^[\w.:@~+-]{1,128}$", re.ASCII)


# Errors in OpenAI's shape, as the SDK pointed at the endpoint expects.
ENDPOINT = Dialect("endpoint", openai.error_json, openai.stream_error)


def _scope(request: web.Request) -> None:
    """Note the endpoint id for the core (which decides whether it exists)."""
    endpoint_id = request.match_info["endpoint_id"]
    if not _ENDPOINT_ID.match(endpoint_id):
        raise EdgeError.http(404, f"the endpoint '{endpoint_id[:128]}' does not exist")
    request[STATE].endpoint = endpoint_id


async def chat_completions(request: web.Request) -> web.StreamResponse:
    _scope(request)
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, opts = wire.chat_request(body)
    return await openai.serve_chat(request, req, opts, ENDPOINT)


async def completions(request: web.Request) -> web.StreamResponse:
    _scope(request)
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, opts = wire.completion_request(body)
    return await openai.serve_completion(request, req, opts, ENDPOINT)


async def list_models(request: web.Request) -> web.Response:
    _scope(request)
    resp = await unary(request, LIST_MODELS, pb.ListModelsRequest())
    return json_response({"object": "list", "data": [wire.model_json(m) for m in resp.models]})


def setup(app: web.Application) -> None:
    add_routes(app, ENDPOINT, [
        ("POST", f"{BASE}/chat/completions", chat_completions),
        ("POST", f"{BASE}/completions", completions),
        ("GET", f"{BASE}/models", list_models),
    ])
