"""The ``openai`` dialect's non-chat tasks: ``/v1/embeddings``, ``/v1/rerank``,
``/v1/audio/transcriptions`` (multipart), ``/v1/audio/speech`` (raw audio back) and
``/v1/images/generations``. Handlers translate (``openai_tasks_wire``) and call the core; errors are
rendered in OpenAI's shape by the ``OPENAI`` dialect.
"""

from __future__ import annotations

from aiohttp import web

from gateway_common.core_api import EMBED, GENERATE_IMAGE, GENERATE_SPEECH, RERANK, TRANSCRIBE
from http_edge.body import read_object
from http_edge.dialects import openai_tasks_wire as wire
from http_edge.dialects.openai import OPENAI
from http_edge.errors import EdgeError
from http_edge.routing import add_routes, json_response, unary
from http_edge.state import CONFIG, MODEL_UNRESOLVED, STATE
from http_edge.upload import Upload, read_upload
from inference_gateway.v1 import inference_pb2 as pb


def _start(request: web.Request, task: str) -> None:
    state = request[STATE]
    state.task, state.model = task, MODEL_UNRESOLVED


async def embeddings(request: web.Request) -> web.Response:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, encoding = wire.embed_request(body)
    _start(request, "embedding")
    resp = await unary(request, EMBED, req)
    request[STATE].prompt_tokens = resp.usage.prompt_tokens
    return json_response(wire.embed_response(resp, encoding))


async def rerank(request: web.Request) -> web.Response:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req = wire.rerank_request(body)
    _start(request, "rerank")
    resp = await unary(request, RERANK, req)
    return json_response(wire.rerank_response(resp, request[STATE].request_id))


async def transcribe_upload(request: web.Request, up: Upload,
                            header: pb.TranscribeRequest) -> pb.TranscribeResponse:
    """Send an upload to the core in one message (a client stream would cost a message per
    chunk and a join in the core)."""
    _start(request, "transcription")
    header.audio = up.file_bytes()
    return await unary(request, TRANSCRIBE, header)


async def transcriptions(request: web.Request) -> web.StreamResponse:
    up = await read_upload(request, request.app[CONFIG].limits.max_upload_bytes)
    model = up.fields.get("model")
    if not model:
        raise EdgeError.bad_request("'model' is required", param="model")
    header, fmt = wire.transcribe_header(up, model)
    resp = await transcribe_upload(request, up, header)
    if fmt == "text":
        return web.Response(text=resp.text, content_type="text/plain")
    return json_response(wire.transcription_json(resp, fmt))


async def speech(request: web.Request) -> web.StreamResponse:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req = wire.speech_request(body)
    _start(request, "speech")
    resp = await unary(request, GENERATE_SPEECH, req)
    return web.Response(body=resp.audio, headers={
        "Content-Type": resp.mime_type or "application/octet-stream"})


async def images(request: web.Request) -> web.Response:
    body = await read_object(request, request.app[CONFIG].limits.max_body_bytes)
    req, fmt = wire.image_request(body)
    _start(request, "image")
    resp = await unary(request, GENERATE_IMAGE, req)
    return json_response(wire.image_response(resp, fmt))


def setup(app: web.Application) -> None:
    add_routes(app, OPENAI, [
        ("POST", "/v1/embeddings", embeddings),
        ("POST", "/v1/rerank", rerank),
        ("POST", "/v1/audio/transcriptions", transcriptions),
        ("POST", "/v1/audio/speech", speech),
        ("POST", "/v1/images/generations", images),
    ])
