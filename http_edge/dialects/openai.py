"""The ``openai`` dialect: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

What TGI's Messages API, vLLM and the official SDKs speak. Handlers only translate (see
``openai_wire``) and call the core.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway_common.core_api import CHAT, CHAT_STREAM, COMPLETE, COMPLETE_STREAM, GET_MODEL, LIST_MODELS
from http_edge.body import read_object
from http_edge.dialects import openai_wire as wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.sse import DONE, frame, relay
from http_edge.state import CONFIG, MODEL_UNRESOLVED, STATE, Dialect
from inference_gateway.v1 import inference_pb2 as pb


def error_json(err: EdgeError, request_id: str) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param,
                      "code": err.code}}


def stream_error(err: EdgeError, request_id: str) -> bytes:
    return frame(orjson.dumps(error_json(err, request_id))) + DONE


OPENAI = Dialect("openai", error_json, stream_error)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, opts = wire.chat_request(body)
    return await serve_chat(request, req, opts, OPENAI)


async def serve_chat(request: web.Request, req: pb.ChatRequest, opts: wire.StreamOptions,
                     dialect: Dialect) -> web.StreamResponse:
    """Chat in the OpenAI shapes, streamed or not (shared by the OpenAI-speaking dialects)."""
    state = request[STATE]
    state.task, state.model = "chat", MODEL_UNRESOLVED
    if opts.stream:
        return await relay(request, CHAT_STREAM, req, wire.ChatEncoder(state, opts.include_usage), dialect)
    resp = await unary(request, CHAT, req)
    wire.record_usage(state, resp.usage)
    return json_response(wire.chat_response(resp))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, opts = wire.completion_request(body)
    return await serve_completion(request, req, opts, OPENAI)


async def serve_completion(request: web.Request, req: pb.CompletionRequest,
                           opts: wire.StreamOptions, dialect: Dialect) -> web.StreamResponse:
    state = request[STATE]
    state.task, state.model = "completion", MODEL_UNRESOLVED
    if opts.stream:
        return await relay(request, COMPLETE_STREAM, req, wire.CompletionEncoder(state, opts.include_usage),
                           dialect)
    resp = await unary(request, COMPLETE, req)
    wire.record_usage(state, resp.usage)
    return json_response(wire.completion_response(resp))


async def list_models(request: web.Request) -> web.Response:
    resp = await unary(request, LIST_MODELS, pb.ListModelsRequest())
    return json_response({"object": "list", "data": [wire.model_json(m) for m in resp.models]})


async def get_model(request: web.Request) -> web.Response:
    model = await unary(request, GET_MODEL, pb.GetModelRequest(id=request.match_info["model"]))
    return json_response(wire.model_json(model))


def setup(app: web.Application) -> None:
    add_routes(app, OPENAI, [
        ("POST", "/v1/chat/completions", chat_completions),
        ("POST", "/v1/completions", completions),
        ("GET", "/v1/models", list_models),
        ("GET", "/v1/models/{model:.+}", get_model),
    ])
