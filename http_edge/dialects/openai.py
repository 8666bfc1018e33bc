"""The ``openai`` dialect: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``.

What TGI's Messages API, vLLM and the official SDKs speak. Handlers only translate (see
``openai_wire``) and call the core.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from http_edge.body import read_object
from http_edge.dialects import openai_wire as wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.sse import DONE, frame, relay
from http_edge.state import CONFIG, CORE, STATE, Dialect
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
    core, state = request.app[CORE], request[STATE]
    state.task, state.model = "chat", core.label_for(req.model)
    timeout, metadata = core.options(request)
    if opts.stream:
        stream = core.inference.ChatStream(req, timeout=timeout, metadata=metadata)
        return await relay(request, stream, wire.ChatEncoder(state, opts.include_usage), dialect)
    resp = await unary(request, core.inference.Chat(req, timeout=timeout, metadata=metadata))
    wire.record_usage(state, resp.usage)
    return json_response(wire.chat_response(resp))


async def completions(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, opts = wire.completion_request(body)
    return await serve_completion(request, req, opts, OPENAI)


async def serve_completion(request: web.Request, req: pb.CompletionRequest,
                           opts: wire.StreamOptions, dialect: Dialect) -> web.StreamResponse:
    core, state = request.app[CORE], request[STATE]
    state.task, state.model = "completion", core.label_for(req.model)
    timeout, metadata = core.options(request)
    if opts.stream:
        stream = core.inference.CompleteStream(req, timeout=timeout, metadata=metadata)
        return await relay(request, stream, wire.CompletionEncoder(state, opts.include_usage),
                           dialect)
    resp = await unary(request, core.inference.Complete(req, timeout=timeout, metadata=metadata))
    wire.record_usage(state, resp.usage)
    return json_response(wire.completion_response(resp))


async def list_models(request: web.Request) -> web.Response:
    core = request.app[CORE]
    timeout, metadata = core.options(request)
    resp = await unary(request, core.models.ListModels(pb.ListModelsRequest(), timeout=timeout,
                                                        metadata=metadata))
    return json_response({"object": "list", "data": [wire.model_json(m) for m in resp.models]})


async def get_model(request: web.Request) -> web.Response:
    core = request.app[CORE]
    timeout, metadata = core.options(request)
    model = await unary(request, core.models.GetModel(
        pb.GetModelRequest(id=request.match_info["model"]), timeout=timeout, metadata=metadata))
    return json_response(wire.model_json(model))


def setup(app: web.Application) -> None:
    add_routes(app, OPENAI, [
        ("POST", "/v1/chat/completions", chat_completions),
        ("POST", "/v1/completions", completions),
        ("GET", "/v1/models", list_models),
        ("GET", "/v1/models/{model:.+}", get_model),
    ])
