"""The ``mlflow`` dialect (seed 002): MLflow's AI gateway, as ``mlflow.deployments`` calls it.

- ``POST /gateway/{endpoint}/invocations`` and ``POST /endpoints/{endpoint}/invocations``: chat
  (``messages``), completions (``prompt``) or embeddings (``input``), streamed with
  ``"stream": true``. The body's key picks the RPC; the core checks that the endpoint's model
  serves that task (a wrong one is a 400 naming the model's task).
- ``GET /api/2.0/endpoints/`` (paged with ``page_token``) and ``GET /api/2.0/endpoints/{name}``.
- ``GET /health`` is the edge's own.

An endpoint name is a gateway model id or alias (config ``models[].aliases``).
"""

from __future__ import annotations

from aiohttp import web

from gateway_common.core_api import EMBED, GET_MODEL, LIST_MODELS
from http_edge.body import read_object
from http_edge.dialects import mlflow_wire as wire
from http_edge.dialects import openai, openai_tasks_wire, openai_wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.state import CONFIG, MODEL_UNRESOLVED, STATE, Dialect
from inference_gateway.v1 import inference_pb2 as pb

MLFLOW = Dialect("mlflow", wire.error_json, wire.stream_error)


async def _model(request: web.Request, name: str) -> pb.Model:
    return await unary(request, GET_MODEL, pb.GetModelRequest(id=name))


async def invocations(request: web.Request) -> web.StreamResponse:
    name = request.match_info["endpoint"]
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    task = wire.body_task(body)
    body = {**body, "model": name}
    if task == "chat":
        req, opts = openai_wire.chat_request(body)
        return await openai.serve_chat(request, req, opts, MLFLOW)
    if task == "completion":
        creq, copts = openai_wire.completion_request(body)
        return await openai.serve_completion(request, creq, copts, MLFLOW)
    if task == "embedding":
        return await _embeddings(request, body)
    # None of the keys: say what this endpoint takes (the only path that looks the model up).
    model = await _model(request, name)
    key = wire.EXPECTED_KEY.get(model.task)
    if key is None:
        raise EdgeError.http(404, f"'{name}' is not an MLflow endpoint: its model serves neither "
                                  "chat, completions nor embeddings")
    raise EdgeError.bad_request(f"the endpoint '{name}' is an {wire.ENDPOINT_TYPES[model.task]} "
                                f"endpoint: the body must hold '{key}'", param=key)


async def _embeddings(request: web.Request, body: dict[str, object]) -> web.Response:
    state = request[STATE]
    req, encoding = openai_tasks_wire.embed_request(body)
    state.task, state.model = "embedding", MODEL_UNRESOLVED
    resp = await unary(request, EMBED, req)
    state.prompt_tokens = resp.usage.prompt_tokens
    return json_response(openai_tasks_wire.embed_response(resp, encoding))


async def list_endpoints(request: web.Request) -> web.Response:
    token = request.query.get("page_token")
    start = wire.decode_token(token) if token else 0
    resp = await unary(request, LIST_MODELS, pb.ListModelsRequest())
    return json_response(wire.endpoints_page(list(resp.models), start, wire.PAGE_SIZE))


async def get_endpoint(request: web.Request) -> web.Response:
    name = request.match_info["endpoint"]
    model = await _model(request, name)
    if not wire.is_endpoint(model):
        raise EdgeError.http(404, f"the endpoint '{name}' is not present or active on the server: "
                                  "its model serves neither chat, completions nor embeddings")
    return json_response(wire.endpoint_json(name, model))


def setup(app: web.Application) -> None:
    add_routes(app, MLFLOW, [
        ("POST", "/gateway/{endpoint:.+}/invocations", invocations),
        ("POST", "/endpoints/{endpoint:.+}/invocations", invocations),
        ("GET", "/api/2.0/endpoints/", list_endpoints),
        ("GET", "/api/2.0/endpoints", list_endpoints),
        ("GET", "/api/2.0/endpoints/{endpoint:.+}", get_endpoint),
    ])
