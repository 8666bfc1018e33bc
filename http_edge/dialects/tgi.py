"""The ``tgi`` dialect: Text Generation Inference's own routes (seed 004, and TGI as its clients use
it): ``POST /generate``, ``POST /generate_stream``, ``POST /`` (what ``text-generation``'s
``Client`` and ``huggingface_hub.InferenceClient(model=URL)`` call), SageMaker's
``POST /invocations``, and ``GET /info``.

TGI serves one model, so these routes name none: they ask the core for the model ``tgi``, which
config ``tgi_model`` routes. TGI's Messages API (``/v1/chat/completions``) is the openai dialect's.
"""

from __future__ import annotations

from aiohttp import web

from gateway_common.core_api import COMPLETE, COMPLETE_STREAM, GET_MODEL
from http_edge.body import read_object
from http_edge.dialects import openai, openai_wire
from http_edge.dialects import tgi_wire as wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.sse import relay
from http_edge.state import CONFIG, MODEL_UNRESOLVED, STATE, Dialect
from inference_gateway.v1 import inference_pb2 as pb

TGI = Dialect("tgi", wire.error_json, wire.stream_error)


async def _generate(request: web.Request, body: dict[str, object], *, as_list: bool,
                    stream: bool | None) -> web.StreamResponse:
    state = request[STATE]
    req, opts = wire.generate_request(body, stream)
    state.task, state.model = "completion", MODEL_UNRESOLVED
    state.generating = True  # text generation on the model itself, whatever its tasks
    if opts.stream:
        return await relay(request, COMPLETE_STREAM, req, wire.GenerateEncoder(state, opts), TGI)
    resp = await unary(request, COMPLETE, req)
    openai_wire.record_usage(state, resp.usage)
    out = wire.generate_response(resp, opts)
    return json_response([out] if as_list else out)


async def _body(request: web.Request) -> dict[str, object]:
    return await read_object(request, request.app[CONFIG].limits.max_body_bytes)


async def generate(request: web.Request) -> web.StreamResponse:
    return await _generate(request, await _body(request), as_list=False, stream=False)


async def generate_stream(request: web.Request) -> web.StreamResponse:
    return await _generate(request, await _body(request), as_list=False, stream=True)


async def compat_generate(request: web.Request) -> web.StreamResponse:
    """``POST /``: a stream with ``"stream": true``, else a one-element list (as TGI does)."""
    return await _generate(request, await _body(request), as_list=True, stream=None)


async def invocations(request: web.Request) -> web.StreamResponse:
    """SageMaker's route: chat (``messages``) in OpenAI's shapes, or generate (``inputs``)."""
    body = await _body(request)
    if "messages" in body:
        req, opts = openai_wire.chat_request({**body, "model": body.get("model") or wire.MODEL})
        return await openai.serve_chat(request, req, opts, TGI)
    if "inputs" in body:
        return await _generate(request, body, as_list=True, stream=None)
    raise EdgeError.bad_request("the body must hold 'inputs' (generate) or 'messages' (chat)")


async def info(request: web.Request) -> web.Response:
    model = await unary(request, GET_MODEL, pb.GetModelRequest(id=wire.MODEL))
    return json_response(wire.info_json(model))


def setup(app: web.Application) -> None:
    add_routes(app, TGI, [
        ("POST", "/generate", generate),
        ("POST", "/generate_stream", generate_stream),
        ("POST", "/", compat_generate),
        ("POST", "/invocations", invocations),
        ("GET", "/info", info),
    ])
