"""Pure parsing of upstream answers for the non-chat tasks (embeddings, rerank, classification,
transcription, images), shared by the HTTP providers. An answer that does not have the expected shape
is an ``UpstreamError`` of kind ``protocol`` (a 502 for HTTP callers), never a crash.
"""

from __future__ import annotations

import binascii
import sys
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pybase64

from gateway_core.errors import UpstreamError
from inference_gateway.v1 import inference_pb2 as pb

SPEECH_MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
               "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
_LITTLE = sys.byteorder == "little"


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Turn any shape error while reading an upstream answer into a clear 502."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, AttributeError,
            binascii.Error) as exc:
        raise UpstreamError(
            f"upstream answered {what} the gateway cannot read ({exc.__class__.__name__})",
            kind="protocol") from exc


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(message: Any, name: str, wire_type: int) -> bytes:
    return _varint(message.DESCRIPTOR.fields_by_name[name].number << 3 | wire_type)


_MODEL_TAG = _tag(pb.EmbedResponse, "model", 2)
_EMBEDDINGS_TAG = _tag(pb.EmbedResponse, "embeddings", 2)
_INDEX_TAG = _tag(pb.Embedding, "index", 0)
_VALUES_TAG = _tag(pb.Embedding, "values", 2)


def packed_vector(values: Any) -> bytes:
    """A vector as little-endian float32 bytes: from a list of numbers (converted in C, no
    per-value Python work), or from base64 that already holds exactly those bytes."""
    if isinstance(values, str):
        raw = pybase64.b64decode(values, validate=True)  # SIMD, about 10x binascii
        if not raw or len(raw) % 4:
            raise ValueError("a base64 vector must hold a whole number of float32 values")
        if _LITTLE:
            return raw
        swapped = array("f", raw)  # pragma: no cover - big-endian hosts
        swapped.byteswap()  # pragma: no cover
        return swapped.tobytes()  # pragma: no cover
    if not isinstance(values, list) or not values:
        raise TypeError("a vector must be a non-empty list of numbers")
    packed = array("f", values)  # TypeError on anything that is not a number
    if not _LITTLE:  # pragma: no cover
        packed.byteswap()
    return packed.tobytes()


def embed_response(model: str, vectors: list[bytes]) -> pb.EmbedResponse:
    """An EmbedResponse from packed vectors, built as wire bytes and parsed once.

    Protobuf encodes ``repeated float`` as packed little-endian float32, the very bytes of
    ``packed_vector``: 64 vectors of 1,024 values cost one parse, not 65,536 conversions.
    """
    name = model.encode()
    parts = [_MODEL_TAG, _varint(len(name)), name]
    for i, packed in enumerate(vectors):
        head = (_INDEX_TAG + _varint(i) if i else b"") + _VALUES_TAG + _varint(len(packed))
        parts += (_EMBEDDINGS_TAG, _varint(len(head) + len(packed)), head, packed)
    return pb.EmbedResponse.FromString(b"".join(parts))  # each vector copied once, then parsed


def embeddings(vectors: list[Any], model: str, expected: int) -> pb.EmbedResponse:
    """A list of vectors in input order → EmbedResponse (the count must match the inputs)."""
    if len(vectors) != expected:
        raise ValueError(f"{len(vectors)} vectors for {expected} inputs")
    return embed_response(model, [packed_vector(v) for v in vectors])


def openai_embeddings(data: Any, model: str, expected: int) -> pb.EmbedResponse:
    with reading("embeddings"):
        items = sorted(data["data"], key=lambda d: int(d.get("index", 0)))
        resp = embeddings([d["embedding"] for d in items], model, expected)
        usage = data.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
        resp.usage.prompt_tokens = resp.usage.total_tokens = tokens
        return resp


def rerank_results(items: list[Any], texts: list[str], req: pb.RerankRequest,
                   score_key: Callable[[dict[str, Any]], Any]) -> list[pb.RerankResult]:
    """Upstream ``[{"index", <score>}]`` → results sorted by score, cut to ``top_n``."""
    results = []
    for item in items:
        index = int(item["index"])
        if not 0 <= index < len(texts):
            raise IndexError(f"result index {index} is out of range")
        score = float(score_key(item))
        results.append(pb.RerankResult(index=index, score=score,
                                       text=texts[index] if req.return_text else ""))
    results.sort(key=lambda r: (-r.score, r.index))
    if req.HasField("top_n"):
        results = results[: req.top_n]
    return results


def openai_rerank(data: Any, req: pb.RerankRequest) -> pb.RerankResponse:
    with reading("a rerank result"):
        items = data["results"] if isinstance(data, dict) else data

        def score(item: dict[str, Any]) -> Any:
            return item["relevance_score"] if "relevance_score" in item else item["score"]

        results = rerank_results(items, list(req.texts), req, score)
        usage = (data.get("usage") or {}) if isinstance(data, dict) else {}
        tokens = int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0)
        return pb.RerankResponse(model=req.model, results=results,
                                 usage=pb.Usage(prompt_tokens=tokens, total_tokens=tokens))


def label_scores(items: Any) -> list[pb.LabelScore]:
    """``[{"label", "score"}]`` → LabelScores, highest first."""
    if not isinstance(items, list):
        raise TypeError("labels must be a list")
    out = [pb.LabelScore(label=str(i["label"]), score=float(i["score"])) for i in items]
    out.sort(key=lambda s: -s.score)
    return out


def transcription(data: Any, model: str) -> pb.TranscribeResponse:
    with reading("a transcription"):
        text = data["text"]
        if not isinstance(text, str):
            raise TypeError("'text' must be a string")
        resp = pb.TranscribeResponse(model=model, text=text,
                                     language=str(data.get("language") or ""))
        if isinstance(data.get("duration"), int | float):
            resp.duration = float(data["duration"])
        return resp


def b64_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise TypeError("expected a base64 string")
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    return pybase64.b64decode(value, validate=True)


def image_mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    raise ValueError("the image is not PNG, JPEG, WebP or GIF")
