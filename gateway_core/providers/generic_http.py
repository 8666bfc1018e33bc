"""A generic JSON-over-HTTP provider for model servers with their own small APIs: text-to-speech,
translation and image servers (a FastAPI app around a Hugging Face pipeline, say).

The model's request fields are declared in config (``fields``: name, label, desc, type, required);
they are what ``generate-speech/schema`` answers, and each request is checked against them before
the upstream is called. The request's main text goes to ``text_field`` (default: the first required
text field); translation languages go to ``source_language_field`` / ``target_language_field``;
``static`` fields are added to every body. The answer is found at ``result_path`` (dotted, list
indices allowed: ``0.translation_text``); with ``result: binary`` the whole body is the audio or
image, with ``result: base64`` the value at ``result_path`` is base64.

    - id: parler-tts
      task: speech
      provider: http
      upstream_url: http://tts:8000/generate
      options:
        fields:
          - {name: prompt, label: Prompt, type: string, required: true}
          - {name: description, label: Speaker Description, type: string, required: true}
        result: base64
        result_path: audio
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from google.protobuf import json_format

from gateway_common.config import ConfigError, ModelConfig
from gateway_core import audio, speech_fields
from gateway_core.errors import InvalidRequest, UpstreamError
from gateway_core.providers import tasks_wire
from gateway_core.providers.base import Call, Provider, SessionPool, register
from gateway_core.providers.http import request_bytes, request_json
from inference_gateway.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class HttpOptions:
    # The fields the upstream takes (seed 000 §2.6's schema entries).
    fields: list[dict[str, Any]] = field(default_factory=list)
    # Where the request's main text goes (default: the first required string field).
    text_field: str | None = None
    source_language_field: str | None = None
    target_language_field: str | None = None
    # Constant fields added to every request body.
    static: dict[str, Any] = field(default_factory=dict)
    # How the answer carries the result: JSON text, base64 in JSON, or the raw body.
    result: Literal["json", "base64", "binary"] = "json"
    # Dotted path to the result in a JSON answer ("" for the whole answer).
    result_path: str = ""
    # Media type of binary results (default: recognised from the bytes).
    mime_type: str | None = None


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path (``a.0.b``); KeyError/IndexError/TypeError when absent."""
    for part in (p for p in path.split(".") if p):
        if isinstance(data, list):
            data = data[int(part)]
        elif isinstance(data, dict):
            data = data[part]
        else:
            raise TypeError(f"cannot read '{part}' of a {type(data).__name__}")
    return data


def audio_mime(data: bytes) -> str | None:
    kind = audio.sniff(data[:16])
    return "audio/mpeg" if kind == "audio/aac" else kind


@register("http")
class HttpProvider(Provider):
    Options = HttpOptions
    options: HttpOptions

    def __init__(self, model: ModelConfig, options: HttpOptions, sessions: SessionPool) -> None:
        super().__init__(model, options, sessions)
        try:
            self.fields = speech_fields.parse_fields(options.fields, "fields")
        except ValueError as exc:
            raise ConfigError(f"models.{model.id}.options", str(exc)) from None
        names = {f.name for f in self.fields}
        for key in ("text_field", "source_language_field", "target_language_field"):
            value = getattr(options, key)
            if value is not None and self.fields and value not in names:
                raise ConfigError(f"models.{model.id}.options.{key}",
                                  f"{value!r} is not one of the declared fields")

    @property
    def _url(self) -> str:
        return self.model.upstream_url or ""

    def _values(self, params: Any, text: str, extra: dict[str, str]) -> dict[str, Any]:
        values: dict[str, Any] = json_format.MessageToDict(params) if params is not None else {}
        for name, value in extra.items():
            if value:
                values[name] = value
        if self.options.text_field and text:
            values[self.options.text_field] = text
            text = ""
        if self.fields:
            values = speech_fields.field_values(values, text, self.fields, "model")
        elif text:
            values["text"] = text
        return {**self.options.static, **values}

    async def _call(self, body: dict[str, Any], call: Call) -> Any:
        url = self._url
        if self.options.result == "binary":
            return await request_bytes(self.sessions.get(url), "POST", url, call, json_body=body,
                                       api_key=self.api_key,
                                       headers={"Content-Type": "application/json",
                                                "Accept": "*/*"})
        return await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)

    def _result(self, data: Any, what: str) -> Any:
        with tasks_wire.reading(what):
            return dig(data, self.options.result_path)

    def _binary(self, data: Any, what: str) -> bytes:
        if self.options.result == "binary":
            raw: bytes = data
        elif self.options.result == "base64":
            with tasks_wire.reading(what):
                raw = tasks_wire.b64_bytes(self._result(data, what))
        else:
            raise UpstreamError(f"model option 'result' must be binary or base64 for {what}",
                                kind="protocol")
        if not raw:
            raise UpstreamError(f"upstream answered {what} with no data", kind="protocol")
        return raw

    async def speech_schema(self, req: pb.SpeechSchemaRequest, call: Call) -> pb.SpeechSchema:
        return pb.SpeechSchema(model=req.model, fields=self.fields)

    async def speech(self, req: pb.SpeechRequest, call: Call) -> pb.SpeechResponse:
        body = self._values(req.params if req.HasField("params") else None, req.input, {})
        raw = self._binary(await self._call(body, call), "speech")
        mime = self.options.mime_type or audio_mime(raw)
        if mime is None:
            raise UpstreamError("upstream answered speech that is not a known audio format",
                                kind="protocol")
        return pb.SpeechResponse(audio=raw, mime_type=mime)

    async def translate(self, req: pb.TranslateRequest, call: Call) -> pb.TranslateResponse:
        if not req.text:
            raise InvalidRequest("'text' is required")
        languages = {}
        if self.options.source_language_field:
            languages[self.options.source_language_field] = req.source_language
        if self.options.target_language_field:
            languages[self.options.target_language_field] = req.target_language
        body = self._values(req.params if req.HasField("params") else None, req.text, languages)
        result = self._result(await self._call(body, call), "a translation")
        if not isinstance(result, str):
            raise UpstreamError("upstream answered a translation that is not text",
                                kind="protocol")
        return pb.TranslateResponse(model=req.model, text=result,
                                    source_language=req.source_language,
                                    target_language=req.target_language)

    async def image(self, req: pb.ImageRequest, call: Call) -> pb.ImageResponse:
        body = self._values(req.params if req.HasField("params") else None, req.prompt, {})
        raw = self._binary(await self._call(body, call), "an image")
        with tasks_wire.reading("an image"):
            mime = self.options.mime_type or tasks_wire.image_mime(raw)
        return pb.ImageResponse(created=int(time.time()),
                                images=[pb.Image(data=raw, mime_type=mime)])
