"""Pure translation for the ``oicm`` dialect (seed 000): request bodies to the core's messages and
the core's answers to the seed's response shapes. No I/O.

Shapes answered: ``classify`` → ``{"classification": [{"label", "score"}...]}`` (highest first);
``embed`` / ``rerank`` / text ``predict`` → Text Embeddings Inference's shapes (the seed's payloads
are TEI's); classical ``predict`` → ``{"data", "meta": {"input_schema", "output_schema"}}`` with
MLflow schema entries (``{"tensor-spec": {"dtype", "shape"}, "type": "tensor"}``); speech and
images → a base64 string; ``transcript`` → ``{"text"}``; ``translate`` →
``{"translation_text", "source_language", "target_language"}``.
"""

from __future__ import annotations

from typing import Any

import pybase64
from google.protobuf import json_format, struct_pb2

from http_edge.body import Fields, check_nesting
from http_edge.dialects import openai_wire
from http_edge.dialects.openai_tasks_wire import packed_vectors, struct_of, texts, vector_floats
from http_edge.errors import EdgeError
from http_edge.state import RequestState
from inference_gateway.v1 import inference_pb2 as pb

DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9
_GENERATE_KEYS = frozenset({"inputs", "parameters", "stream", "max_new_tokens", "do_sample",
                            "temperature", "top_p", "top_k", "repetition_penalty", "stop", "seed",
                            "frequency_penalty", "model"})


def with_defaults(params: pb.SamplingParams) -> pb.SamplingParams:
    """The seed's defaults where the request left them out: temperature 0.7, top_p 0.9."""
    if not params.HasField("temperature"):
        params.temperature = DEFAULT_TEMPERATURE
    if not params.HasField("top_p"):
        params.top_p = DEFAULT_TOP_P
    return params


def is_generate_form(body: dict[str, Any]) -> bool:
    """The ``{"inputs", "max_new_tokens", "do_sample", "stream"}`` form, not OpenAI messages."""
    return "inputs" in body and "messages" not in body


def chat_request(body: dict[str, Any], model: str) -> tuple[pb.ChatRequest,
                                                            openai_wire.StreamOptions]:
    if "inputs" in body:
        raise EdgeError.bad_request("send either 'messages' or 'inputs', not both", param="inputs")
    req, opts = openai_wire.chat_request({**body, "model": model})
    with_defaults(req.params)
    return req, opts


def generate_request(body: dict[str, Any], model: str) -> tuple[pb.CompletionRequest,
                                                                openai_wire.StreamOptions]:
    """The TGI-style form → a completion of ``inputs`` (TGI's ``parameters`` object also read)."""
    unknown = sorted(k for k in body if k not in _GENERATE_KEYS)
    if unknown:
        raise EdgeError.bad_request(
            f"unknown field '{unknown[0][:40]}' (with 'inputs', send: max_new_tokens, do_sample,"
            " temperature, top_p, top_k, repetition_penalty, stop, seed, stream)",
            param=unknown[0][:40])
    f = Fields(body)
    prompt = f.req_str("inputs")
    merged = dict(body)
    nested = f.obj("parameters")
    if nested is not None:
        merged.update({k: v for k, v in nested.data.items() if v is not None})
    if "max_new_tokens" in merged:
        merged["max_tokens"] = merged.pop("max_new_tokens")
    params = openai_wire.sampling(Fields(merged))
    req = pb.CompletionRequest(model=model, prompt=prompt)
    req.params.CopyFrom(with_defaults(params))
    return req, openai_wire.StreamOptions(bool(f.bool("stream", False)), False)


def completion_as_chat(resp: pb.CompletionResponse) -> dict[str, Any]:
    """A completion answered in the chat.completion shape (what the endpoint's clients read)."""
    return openai_wire.chat_response(pb.ChatResponse(
        id=resp.id, created=resp.created, model=resp.model, usage=resp.usage,
        system_fingerprint=resp.system_fingerprint,
        choices=[pb.ChatChoice(index=c.index, finish_reason=c.finish_reason,
                               message=pb.ChatMessage(role="assistant", content=c.text))
                 for c in resp.choices]))


class CompletionAsChatEncoder:
    """CompletionChunk → ``chat.completion.chunk`` frames (``choices[0].delta.content``)."""

    __slots__ = ("inner",)

    def __init__(self, state: RequestState) -> None:
        self.inner = openai_wire.ChatEncoder(state, False)

    def encode(self, c: pb.CompletionChunk) -> bytes:
        chunk = pb.ChatChunk(id=c.id.replace("cmpl-", "chatcmpl-", 1), created=c.created,
                             model=c.model, system_fingerprint=c.system_fingerprint)
        for ch in c.choices:
            chunk.choices.add(index=ch.index, finish_reason=ch.finish_reason,
                              delta=pb.ChatDelta(role="assistant", content=ch.text))
        if c.HasField("usage"):
            chunk.usage.CopyFrom(c.usage)
        return self.inner.encode(chunk)

    def end(self) -> bytes:
        return self.inner.end()


# ---------------------------------------------------------------------------------------------
# Text tasks


def _inputs(body: dict[str, Any]) -> tuple[list[str], bool]:
    """``inputs`` as a list, and whether it was one string (answered unwrapped)."""
    single = isinstance(body.get("inputs"), str)
    return texts(Fields(body), "inputs"), single


def classify_request(body: dict[str, Any], model: str) -> tuple[pb.ClassifyRequest, bool]:
    inputs, single = _inputs(body)
    f = Fields(body)
    req = pb.ClassifyRequest(model=model, inputs=inputs)
    if (k := f.int("top_k", 1)) is not None:
        req.top_k = k
    if (t := f.bool("truncate")) is not None:
        req.truncate = t
    return req, single


def labels_json(c: pb.Classification) -> list[dict[str, Any]]:
    return [{"label": s.label, "score": s.score} for s in c.labels]


def classification_json(resp: pb.ClassifyResponse, single: bool) -> dict[str, Any]:
    results = [labels_json(r) for r in resp.results]
    return {"classification": results[0] if single else results}


def tei_predictions(resp: pb.ClassifyResponse, single: bool) -> Any:
    """TEI's ``/predict`` answer: the labels of one input, or one list per input."""
    results = [labels_json(r) for r in resp.results]
    return results[0] if single else results


def embed_request(body: dict[str, Any], model: str) -> pb.EmbedRequest:
    inputs, _ = _inputs(body)
    f = Fields(body)
    req = pb.EmbedRequest(model=model, inputs=inputs)
    if (n := f.bool("normalize")) is not None:
        req.normalize = n
    if (t := f.bool("truncate")) is not None:
        req.truncate = t
    if (d := f.int("dimensions", 1)) is not None:
        req.dimensions = d
    return req


def embeddings_json(resp: pb.EmbedResponse) -> list[list[float]]:
    return [vector_floats(packed) for _, packed in packed_vectors(resp)]


def rerank_request(body: dict[str, Any], model: str) -> pb.RerankRequest:
    f = Fields(body)
    values = f.list("texts", required=True)
    assert values is not None
    if not values or not all(isinstance(t, str) for t in values):
        raise EdgeError.bad_request("'texts' must be a non-empty array of strings",
                                    param="texts")
    req = pb.RerankRequest(model=model, query=f.req_str("query"), texts=values,
                           return_text=bool(f.bool("return_text", False)))
    if (t := f.bool("truncate")) is not None:
        req.truncate = t
    if (n := f.int("top_n", 1)) is not None:
        req.top_n = n
    return req


def ranks_json(resp: pb.RerankResponse) -> list[dict[str, Any]]:
    out = []
    for r in resp.results:
        item: dict[str, Any] = {"index": r.index, "score": r.score}
        if r.text:
            item["text"] = r.text
        out.append(item)
    return out


# ---------------------------------------------------------------------------------------------
# Classical ML


def predict_request(body: Any, model: str) -> pb.PredictRequest:
    """Any JSON payload (a list, or MLflow's ``inputs`` / ``instances`` / ``dataframe_split``);
    the core checks it against the model's signature."""
    check_nesting(body, "the input")
    value = struct_pb2.Value()
    json_format.ParseDict(body, value)
    return pb.PredictRequest(model=model, json=value)


def schema_entry_json(e: pb.SchemaEntry) -> dict[str, Any]:
    """MLflow's JSON for a schema entry, keys in the seed's order."""
    if e.type == "tensor":
        out: dict[str, Any] = {"tensor-spec": {"dtype": e.dtype, "shape": list(e.shape)},
                               "type": "tensor"}
        if e.name:
            out["name"] = e.name
        return out
    col: dict[str, Any] = {"type": e.type}
    if e.name:
        col["name"] = e.name
    col["required"] = e.required
    return col


def predict_json(resp: pb.PredictResponse) -> dict[str, Any]:
    return {
        "data": json_format.MessageToDict(resp.outputs) if resp.HasField("outputs") else None,
        "meta": {"input_schema": [schema_entry_json(e) for e in resp.input_schema],
                 "output_schema": [schema_entry_json(e) for e in resp.output_schema]},
    }


# ---------------------------------------------------------------------------------------------
# Speech, images, translation


def speech_schema_json(schema: pb.SpeechSchema) -> list[dict[str, Any]]:
    return [{"desc": f.desc, "label": f.label, "name": f.name, "required": f.required,
             "type": f.type} for f in schema.fields]


def speech_request(body: dict[str, Any], model: str) -> pb.SpeechRequest:
    """The model's declared fields, as named by its schema, go to ``params``."""
    req = pb.SpeechRequest(model=model)
    if body:
        req.params.CopyFrom(struct_of(body))
    return req


def image_request(body: dict[str, Any], model: str) -> pb.ImageRequest:
    f = Fields(body)
    req = pb.ImageRequest(model=model, prompt=f.req_str("prompt"), size=f.str("size") or "")
    if (n := f.int("n", 1, 10)) is not None:
        req.n = n
    extra = {k: v for k, v in body.items() if k not in ("prompt", "size", "n") and v is not None}
    if extra:
        req.params.CopyFrom(struct_of(extra))
    return req


def b64(data: bytes) -> str:
    return pybase64.b64encode_as_string(data)


def images_json(resp: pb.ImageResponse) -> Any:
    """One image: its base64 string; several: a list of them."""
    encoded = [b64(i.data) for i in resp.images]
    return encoded[0] if len(encoded) == 1 else encoded


_TRANSLATE_ALIASES = {"source_language": ("source_language", "src_lang", "source_lang"),
                      "target_language": ("target_language", "tgt_lang", "target_lang")}


def translate_request(body: dict[str, Any], model: str) -> pb.TranslateRequest:
    f = Fields(body)
    text = f.str("text")
    if text is None:
        text = f.str("inputs")
    if not text:
        raise EdgeError.bad_request("'text' is required (a non-empty string)", param="text")
    req = pb.TranslateRequest(model=model, text=text)
    used = {"text", "inputs"}
    for ours, names in _TRANSLATE_ALIASES.items():
        for name in names:
            if (value := f.str(name)) is not None:
                setattr(req, ours, value)
                used.add(name)
                break
    extra = {k: v for k, v in body.items() if k not in used and v is not None}
    if extra:
        req.params.CopyFrom(struct_of(extra))
    return req


def translation_json(resp: pb.TranslateResponse) -> dict[str, Any]:
    return {"translation_text": resp.text, "source_language": resp.source_language or None,
            "target_language": resp.target_language or None}
