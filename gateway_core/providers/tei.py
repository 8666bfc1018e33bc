"""Text Embeddings Inference (Hugging Face TEI): ``/embed``, ``/rerank`` and ``/predict``.

TEI's own wire format: ``/embed`` takes ``{"inputs", "normalize", "truncate"}`` and answers a list of
vectors; ``/rerank`` takes ``{"query", "texts"}`` and answers ``[{"index", "score"}]``;
``/predict`` takes one string, or a batch written as ``[["text"], ["text"]]`` (a bare pair of
strings would be read as one sentence pair), and answers ``[{"label", "score"}]`` per input.
``upstream_url`` is the server's base URL (no ``/v1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway_core.providers import tasks_wire
from gateway_core.providers.base import Call, Provider, register
from gateway_core.providers.http import request_json
from gateway_core.usage_estimates import estimate_tokens
from inference_gateway.v1 import inference_pb2 as pb


@dataclass(frozen=True)
class TEIOptions:
    # Unit-length vectors unless the request says otherwise (TEI's default too).
    normalize: bool = True
    # Cut inputs longer than the model's limit instead of failing, unless the request says.
    truncate: bool = False


@register("tei")
class TEIProvider(Provider):
    Options = TEIOptions
    options: TEIOptions

    def _truncate(self, value: bool | None) -> bool:
        return self.options.truncate if value is None else value

    async def _post(self, path: str, body: dict[str, Any], call: Call) -> Any:
        url = self.url(path)
        return await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)

    async def embed(self, req: pb.EmbedRequest, call: Call) -> pb.EmbedResponse:
        body: dict[str, Any] = {
            "inputs": list(req.inputs),
            "normalize": req.normalize if req.HasField("normalize") else self.options.normalize,
            "truncate": self._truncate(req.truncate if req.HasField("truncate") else None),
        }
        if req.HasField("dimensions"):
            body["dimensions"] = req.dimensions
        data = await self._post("embed", body, call)
        with tasks_wire.reading("embeddings"):
            if not isinstance(data, list):
                raise TypeError("expected a list of vectors")
            resp = tasks_wire.embeddings(data, req.model, len(req.inputs))
        tokens = sum(estimate_tokens(t) for t in req.inputs)
        resp.usage.CopyFrom(pb.Usage(prompt_tokens=tokens, total_tokens=tokens, estimated=True))
        return resp

    async def rerank(self, req: pb.RerankRequest, call: Call) -> pb.RerankResponse:
        body = {"query": req.query, "texts": list(req.texts), "return_text": False,
                "truncate": self._truncate(req.truncate if req.HasField("truncate") else None)}
        data = await self._post("rerank", body, call)
        with tasks_wire.reading("a rerank result"):
            if not isinstance(data, list):
                raise TypeError("expected a list of ranks")
            results = tasks_wire.rerank_results(data, list(req.texts), req,
                                                lambda item: item["score"])
        tokens = estimate_tokens(req.query) * len(req.texts) + sum(
            estimate_tokens(t) for t in req.texts)
        return pb.RerankResponse(model=req.model, results=results, usage=pb.Usage(
            prompt_tokens=tokens, total_tokens=tokens, estimated=True))

    async def classify(self, req: pb.ClassifyRequest, call: Call) -> pb.ClassifyResponse:
        single = len(req.inputs) == 1
        inputs: Any = req.inputs[0] if single else [[t] for t in req.inputs]
        body = {"inputs": inputs,
                "truncate": self._truncate(req.truncate if req.HasField("truncate") else None)}
        data = await self._post("predict", body, call)
        resp = pb.ClassifyResponse(model=req.model)
        with tasks_wire.reading("a classification"):
            per_input = [data] if single else data
            if not isinstance(per_input, list) or len(per_input) != len(req.inputs):
                raise ValueError("one list of labels per input was expected")
            for labels in per_input:
                scores = tasks_wire.label_scores(labels)
                if req.HasField("top_k"):
                    scores = scores[: req.top_k]
                resp.results.add().labels.extend(scores)
        return resp
