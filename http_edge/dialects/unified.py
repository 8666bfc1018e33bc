"""The ``unified`` dialect (seed 003): ``POST /v1/inference/chat``.

Callers authenticate with ``x-api-key`` (or a bearer token); the edge forwards both to the core as
metadata, like every dialect. Translation lives in ``unified_wire``.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from gateway_common.core_api import CHAT, CHAT_STREAM
from http_edge.body import read_object
from http_edge.dialects import openai_wire
from http_edge.dialects import unified_wire as wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.sse import DONE, frame, relay
from http_edge.state import CONFIG, MODEL_UNRESOLVED, STATE, Dialect


def stream_error(err: EdgeError, request_id: str) -> bytes:
    return frame(orjson.dumps(wire.error_json(err, request_id))) + DONE


UNIFIED = Dialect("unified", wire.error_json, stream_error)


async def chat(request: web.Request) -> web.StreamResponse:
    state = request[STATE]
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, opts = wire.chat_request(body)
    state.task, state.model = "chat", MODEL_UNRESOLVED
    if opts.stream:
        return await relay(request, CHAT_STREAM, req, wire.ChatEncoder(state, opts.include_usage), UNIFIED)
    resp = await unary(request, CHAT, req)
    openai_wire.record_usage(state, resp.usage)
    return json_response(wire.chat_response(resp))


def setup(app: web.Application) -> None:
    add_routes(app, UNIFIED, [("POST", "/v1/inference/chat", chat)])
