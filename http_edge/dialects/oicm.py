"""The ``oicm`` dialect (seed 000): one model version per URL, under
``/models/{model_version_id}/proxy/v1/`` and the same paths without ``/v1``.

The model version id in the path routes (a model id or alias); a ``model`` field in the body is
ignored. ``chat/completions`` takes OpenAI messages (with an optional ``chat_template``) or the
``{"inputs", "max_new_tokens", "do_sample", "stream"}`` form, and answers in OpenAI's chat shapes
(streams as ``chat.completion.chunk`` events). ``predict`` serves both text classification and
classical ML: which one is decided by the model's task, read from the core. Errors use OpenAI's
error shape.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway_common.core_api import (
    CLASSIFY,
    COMPLETE,
    COMPLETE_STREAM,
    EMBED,
    GENERATE_IMAGE,
    GENERATE_SPEECH,
    GET_MODEL,
    GET_SPEECH_SCHEMA,
    PREDICT,
    RERANK,
    TRANSLATE,
)
from http_edge.body import read_json, read_object
from http_edge.dialects import oicm_wire as wire
from http_edge.dialects import openai, openai_tasks, openai_wire
from http_edge.dialects import openai_tasks_wire as task_wire
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.sse import relay
from http_edge.state import CONFIG, MODEL_UNRESOLVED, STATE, Dialect
from http_edge.upload import read_upload
from inference_gateway.v1 import inference_pb2 as pb

OICM = Dialect("oicm", openai.error_json, openai.stream_error)
PREFIXES = ("/models/{model_version_id}/proxy/v1", "/models/{model_version_id}/proxy")


def _model(request: web.Request) -> str:
    return request.match_info["model_version_id"]


async def _body(request: web.Request) -> dict[str, Any]:
    return await read_object(request, request.app[CONFIG].limits.max_body_bytes)


def _start(request: web.Request, task: str) -> str:
    """The request's model, its task and model noted for the metrics."""
    model = _model(request)
    state = request[STATE]
    state.task, state.model = task, MODEL_UNRESOLVED
    return model


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    model = _model(request)
    if not wire.is_generate_form(body):
        req, opts = wire.chat_request(body, model)
        return await openai.serve_chat(request, req, opts, OICM)
    creq, copts = wire.generate_request(body, model)
    state = request[STATE]
    state.task, state.model = "completion", MODEL_UNRESOLVED
    state.generating = True  # text generation on the model itself, whatever its tasks
    if copts.stream:
        return await relay(request, COMPLETE_STREAM, creq, wire.CompletionAsChatEncoder(state), OICM)
    resp = await unary(request, COMPLETE, creq)
    state.prompt_tokens, state.completion_tokens = (resp.usage.prompt_tokens,
                                                    resp.usage.completion_tokens)
    return json_response(wire.completion_as_chat(resp))


async def models(request: web.Request) -> web.Response:
    model = _start(request, "models")
    found = await unary(request, GET_MODEL, pb.GetModelRequest(id=model))
    return json_response({"object": "list", "data": [openai_wire.model_json(found)]})


async def _classify(request: web.Request, body: dict[str, Any], tei_shape: bool) -> web.Response:
    model = _start(request, "classification")
    req, single = wire.classify_request(body, model)
    resp = await unary(request, CLASSIFY, req)
    if tei_shape:
        return json_response(wire.tei_predictions(resp, single))
    return json_response(wire.classification_json(resp, single))


async def classify(request: web.Request) -> web.Response:
    return await _classify(request, await _body(request), tei_shape=False)


async def predict(request: web.Request) -> web.Response:
    """Text classification or classical ML, by the model's task."""
    data = await read_json(request, request.app[CONFIG].limits.max_body_bytes)
    model = _start(request, "predict")
    found = await unary(request, GET_MODEL, pb.GetModelRequest(id=model))
    if found.task == pb.TASK_CLASSIFICATION:
        if not isinstance(data, dict):
            raise EdgeError.bad_request("the body must be an object with 'inputs' (this model"
                                        " classifies text)")
        return await _classify(request, data, tei_shape=True)
    req = wire.predict_request(data, model)
    resp = await unary(request, PREDICT, req)
    return json_response(wire.predict_json(resp))


async def transcript(request: web.Request) -> web.Response:
    up = await read_upload(request, request.app[CONFIG].limits.max_upload_bytes)
    header = pb.TranscribeRequest(model=_model(request), mime_type=up.content_type,
                                  filename=up.filename, language=up.fields.get("language", ""),
                                  prompt=up.fields.get("prompt", ""))
    resp = await openai_tasks.transcribe_upload(request, up, header)
    return json_response(task_wire.transcription_json(resp, "json"))


async def speech_schema(request: web.Request) -> web.Response:
    model = _start(request, "speech")
    schema = await unary(request, GET_SPEECH_SCHEMA, pb.SpeechSchemaRequest(model=model))
    return json_response(wire.speech_schema_json(schema))


async def generate_speech(request: web.Request) -> web.Response:
    body = await _body(request)
    model = _start(request, "speech")
    resp = await unary(request, GENERATE_SPEECH, wire.speech_request(body, model))
    return json_response(wire.b64(resp.audio))


async def generate_image(request: web.Request) -> web.Response:
    body = await _body(request)
    model = _start(request, "image")
    resp = await unary(request, GENERATE_IMAGE, wire.image_request(body, model))
    return json_response(wire.images_json(resp))


async def translate(request: web.Request) -> web.Response:
    body = await _body(request)
    model = _start(request, "translation")
    resp = await unary(request, TRANSLATE, wire.translate_request(body, model))
    return json_response(wire.translation_json(resp))


async def embed(request: web.Request) -> web.Response:
    body = await _body(request)
    model = _start(request, "embedding")
    resp = await unary(request, EMBED, wire.embed_request(body, model))
    request[STATE].prompt_tokens = resp.usage.prompt_tokens
    return json_response(wire.embeddings_json(resp))


async def rerank(request: web.Request) -> web.Response:
    body = await _body(request)
    model = _start(request, "rerank")
    resp = await unary(request, RERANK, wire.rerank_request(body, model))
    return json_response(wire.ranks_json(resp))


def setup(app: web.Application) -> None:
    routes = [
        ("POST", "chat/completions", chat_completions),
        ("GET", "models", models),
        ("POST", "classify", classify),
        ("POST", "transcript", transcript),
        ("GET", "generate-speech/schema", speech_schema),
        ("POST", "generate-speech", generate_speech),
        ("POST", "generate-image", generate_image),
        ("POST", "translate", translate),
        ("POST", "embed", embed),
        ("POST", "rerank", rerank),
        ("POST", "predict", predict),
    ]
    add_routes(app, OICM, [(method, f"{prefix}/{path}", handler)
                           for prefix in PREFIXES for method, path, handler in routes])
