"""Pure translation of the OpenAI-style task bodies (embeddings, rerank, audio, images) to the core's
messages and back. No I/O; the ``openai`` dialect's task handlers call these, and so does ``oicm``
where the shapes agree.
"""

from __future__ import annotations

import sys
import time
from array import array
from typing import Any

import pybase64
from google.protobuf import struct_pb2

from http_edge.body import Fields, check_nesting
from http_edge.errors import EdgeError
from http_edge.upload import Upload
from inference_gateway.v1 import inference_pb2 as pb

MAX_INPUTS = 2048
ENCODINGS = ("float", "base64")
SPEECH_FORMATS = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                  "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
TRANSCRIPT_FORMATS = ("json", "text", "verbose_json")
IMAGE_FORMATS = ("b64_json", "url")
_LITTLE = sys.byteorder == "little"


def struct_of(data: dict[str, Any]) -> struct_pb2.Struct:
    check_nesting(data, "a parameter")
    s = struct_pb2.Struct()
    s.update(data)
    return s


def texts(f: Fields, name: str, *, what: str = "text") -> list[str]:
    """A required string or non-empty array of strings (token arrays are refused by name)."""
    value = f.get(name)
    if value is None:
        raise EdgeError.bad_request(f"'{name}' is required", param=name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > MAX_INPUTS:
            raise EdgeError.bad_request(f"'{name}' may hold at most {MAX_INPUTS} {what}s",
                                        param=name)
        return value
    if isinstance(value, list) and value and all(isinstance(v, int | list) for v in value):
        raise EdgeError.bad_request(
            f"'{name}' holds token ids; this gateway takes {what} only", param=name)
    raise EdgeError.bad_request(
        f"'{name}' must be a string or a non-empty array of strings", param=name)


# ---------------------------------------------------------------------------------------------
# Embeddings


def embed_request(body: dict[str, Any]) -> tuple[pb.EmbedRequest, str]:
    """OpenAI ``/v1/embeddings`` body → (EmbedRequest, encoding_format)."""
    f = Fields(body)
    req = pb.EmbedRequest(model=f.req_str("model"), inputs=texts(f, "input"))
    encoding = f.str("encoding_format") or "float"
    if encoding not in ENCODINGS:
        raise EdgeError.bad_request(
            f"'encoding_format' must be 'float' or 'base64'; got {encoding[:20]!r}",
            param="encoding_format")
    if (dims := f.int("dimensions", 1)) is not None:
        req.dimensions = dims
    if (user := f.str("user")) is not None:
        req.end_user = user
    return req, encoding


_VALUES_FIELD = pb.Embedding.DESCRIPTOR.fields_by_name["values"].number
_INDEX_FIELD = pb.Embedding.DESCRIPTOR.fields_by_name["index"].number

Packed = bytes | memoryview


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _skip(data: bytes, pos: int, kind: int) -> int:
    """The position after a field of wire type ``kind`` whose value starts at ``pos``."""
    if kind == 0:
        return _varint(data, pos)[1]
    if kind == 1:
        return pos + 8
    if kind == 2:
        length, pos = _varint(data, pos)
        return pos + length
    if kind == 5:
        return pos + 4
    raise ValueError(f"unexpected wire type {kind} in an embedding")


def _embedding(data: bytes, view: memoryview, pos: int, end: int) -> tuple[int, Packed]:
    index = 0
    parts: list[Packed] = []
    while pos < end:
        key, pos = _varint(data, pos)
        field, kind = key >> 3, key & 7
        if field == _INDEX_FIELD and kind == 0:
            index, pos = _varint(data, pos)
        elif field == _VALUES_FIELD and kind == 2:  # packed: the usual form
            length, pos = _varint(data, pos)
            parts.append(view[pos:pos + length])
            pos += length
        elif field == _VALUES_FIELD and kind == 5:  # one unpacked float
            parts.append(view[pos:pos + 4])
            pos += 4
        else:
            pos = _skip(data, pos, kind)
    packed: Packed = parts[0] if len(parts) == 1 else b"".join(parts)
    if not _LITTLE:  # pragma: no cover - the wire format is little-endian
        swapped = array("f")
        swapped.frombytes(packed)
        swapped.byteswap()
        packed = swapped.tobytes()
    return index, packed


def _packed(e: pb.Embedding) -> tuple[int, Packed]:
    data = e.SerializeToString()
    # The form protobuf writes: [index] then one packed run of the values, nothing else.
    index, pos = _varint(data, 1) if data[:1] == b"\x08" else (0, 0)
    if data[pos:pos + 1] == b"\x12":
        length, start = _varint(data, pos + 1)
        if start + length == len(data):
            return index, memoryview(data)[start:]
    return _embedding(data, memoryview(data), 0, len(data))  # any other legal form


def packed_vectors(resp: pb.EmbedResponse) -> list[tuple[int, Packed]]:
    """(index, little-endian float32 bytes) of each embedding, from its wire form.

    Protobuf encodes ``repeated float`` packed, as exactly these bytes: each vector is a view
    into its embedding's serialisation, and no value is converted one by one (64 vectors of 768
    values: 64 serialisations in C instead of 49,152 conversions in Python).
    """
    return [_packed(e) for e in resp.embeddings]


def vector_b64(packed: Packed) -> str:
    """float32 little-endian bytes in base64: what the OpenAI SDK decodes by default."""
    return pybase64.b64encode_as_string(packed)


def vector_floats(packed: Packed) -> list[float]:
    values = array("f")
    values.frombytes(packed)
    return values.tolist()


def embed_response(resp: pb.EmbedResponse, encoding: str) -> dict[str, Any]:
    encode = vector_b64 if encoding == "base64" else vector_floats
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": encode(packed)}
                 for index, packed in packed_vectors(resp)],
        "model": resp.model,
        "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                  "total_tokens": resp.usage.total_tokens or resp.usage.prompt_tokens},
    }


# ---------------------------------------------------------------------------------------------
# Rerank (the Cohere / Jina / vLLM shape of /v1/rerank)


def _documents(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise EdgeError.bad_request("'documents' must be a non-empty array of strings",
                                    param="documents")
    out = []
    for i, d in enumerate(value):
        if isinstance(d, dict):
            d = d.get("text")
        if not isinstance(d, str):
            raise EdgeError.bad_request(
                f"'documents[{i}]' must be a string or an object with a 'text' string",
                param=f"documents[{i}]")
        out.append(d)
    if len(out) > MAX_INPUTS:
        raise EdgeError.bad_request(f"'documents' may hold at most {MAX_INPUTS} texts",
                                    param="documents")
    return out


def rerank_request(body: dict[str, Any]) -> pb.RerankRequest:
    f = Fields(body)
    req = pb.RerankRequest(model=f.req_str("model"), query=f.req_str("query"),
                           texts=_documents(body.get("documents")))
    if (top := f.int("top_n", 1)) is not None:
        req.top_n = top
    req.return_text = bool(f.bool("return_documents", True))
    return req


def rerank_response(resp: pb.RerankResponse, request_id: str) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for r in resp.results:
        item: dict[str, Any] = {"index": r.index, "relevance_score": r.score}
        if r.text:
            item["document"] = {"text": r.text}
        results.append(item)
    return {"id": f"rerank-{request_id}", "model": resp.model, "results": results,
            "usage": {"total_tokens": resp.usage.total_tokens or resp.usage.prompt_tokens}}


# ---------------------------------------------------------------------------------------------
# Audio


def transcribe_header(up: Upload, model: str) -> tuple[pb.TranscribeRequest, str]:
    """The form fields of an OpenAI transcription upload → (header, response_format)."""
    if up.fields.get("stream", "").lower() in ("true", "1"):
        raise EdgeError.bad_request("streamed transcription is not supported; leave 'stream'"
                                    " unset", param="stream")
    req = pb.TranscribeRequest(model=model, mime_type=up.content_type, filename=up.filename,
                               language=up.fields.get("language", ""),
                               prompt=up.fields.get("prompt", ""))
    if (raw := up.fields.get("temperature")) not in (None, ""):
        try:
            temperature = float(raw)
        except ValueError:
            temperature = -1.0
        if not 0 <= temperature <= 1:
            raise EdgeError.bad_request("'temperature' must be a number between 0 and 1",
                                        param="temperature")
        req.temperature = temperature
    fmt = up.fields.get("response_format") or "json"
    if fmt not in TRANSCRIPT_FORMATS:
        raise EdgeError.bad_request(
            f"'response_format' must be one of {', '.join(TRANSCRIPT_FORMATS)}; got {fmt[:20]!r}",
            param="response_format")
    return req, fmt


def transcription_json(resp: pb.TranscribeResponse, fmt: str) -> dict[str, Any]:
    if fmt != "verbose_json":
        return {"text": resp.text}
    out: dict[str, Any] = {"task": "transcribe", "language": resp.language, "text": resp.text,
                           "segments": []}
    out["duration"] = resp.duration if resp.HasField("duration") else None
    return out


def speech_request(body: dict[str, Any]) -> pb.SpeechRequest:
    """OpenAI ``/v1/audio/speech`` body → SpeechRequest (other fields go to ``params``)."""
    f = Fields(body)
    req = pb.SpeechRequest(model=f.req_str("model"), input=f.req_str("input"),
                           voice=f.str("voice") or "", instructions=f.str("instructions") or "")
    fmt = f.str("response_format")
    if fmt is not None:
        if fmt not in SPEECH_FORMATS:
            raise EdgeError.bad_request(
                f"'response_format' must be one of {', '.join(SPEECH_FORMATS)}; got"
                f" {fmt[:20]!r}", param="response_format")
        req.response_format = fmt
    if (speed := f.float("speed", 0.25, 4.0)) is not None:
        req.speed = speed
    known = {"model", "input", "voice", "instructions", "response_format", "speed",
             "stream_format"}
    extra = {k: v for k, v in body.items() if k not in known and v is not None}
    if extra:
        req.params.CopyFrom(struct_of(extra))
    return req


# ---------------------------------------------------------------------------------------------
# Images


def image_request(body: dict[str, Any]) -> tuple[pb.ImageRequest, str]:
    """OpenAI ``/v1/images/generations`` body → (ImageRequest, response_format)."""
    f = Fields(body)
    req = pb.ImageRequest(model=f.req_str("model"), prompt=f.req_str("prompt"),
                          size=f.str("size") or "")
    if (n := f.int("n", 1, 10)) is not None:
        req.n = n
    fmt = f.str("response_format") or "b64_json"
    if fmt not in IMAGE_FORMATS:
        raise EdgeError.bad_request(
            f"'response_format' must be 'b64_json' or 'url'; got {fmt[:20]!r}",
            param="response_format")
    known = {"model", "prompt", "size", "n", "response_format", "user"}
    extra = {k: v for k, v in body.items() if k not in known and v is not None}
    if extra:
        req.params.CopyFrom(struct_of(extra))
    return req, fmt


def image_response(resp: pb.ImageResponse, fmt: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = []
    for img in resp.images:
        b64 = pybase64.b64encode_as_string(img.data)
        # No image host here: a URL is a data: URL, which browsers and HTTP clients accept.
        item: dict[str, Any] = ({"b64_json": b64} if fmt == "b64_json"
                                else {"url": f"data:{img.mime_type or 'image/png'};base64,{b64}"})
        if img.revised_prompt:
            item["revised_prompt"] = img.revised_prompt
        data.append(item)
    return {"created": resp.created or int(time.time()), "data": data}
