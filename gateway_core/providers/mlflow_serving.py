"""MLflow model serving (``mlflow models serve``, and servers that speak its protocol):
``POST /invocations`` with ``inputs``, ``instances`` or ``dataframe_split`` for classical ML.

The model's signature is its input and output schema: from the ``signature`` option (MLflow's JSON,
as in the ``MLmodel`` file), or read at start-up from ``signature_url`` where a server exposes it:
an ``MLmodel`` file (e.g. the tracking server's ``/get-artifact?path=MLmodel&run_uuid=...``), a
signature JSON, or Open Inference Protocol model metadata (MLServer's ``/v2/models/{name}``).
MLflow's scoring server itself has no such route. Inputs are checked against the signature in the
core before the upstream is called (``predict_schema``); a model without a known signature gets its
inputs passed on unchecked.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import yaml
from google.protobuf import json_format, struct_pb2

from gateway_common.config import ConfigError, ModelConfig
from gateway_core import predict_schema
from gateway_core.errors import GatewayError, UpstreamError
from gateway_core.predict_schema import Signature
from gateway_core.providers.base import Call, Provider, SessionPool, register
from gateway_core.providers.http import request_bytes, request_json
from inference_gateway.v1 import inference_pb2 as pb

log = logging.getLogger(__name__)

# Open Inference Protocol datatypes → MLflow dtypes.
_V2_DTYPES = {"FP64": "float64", "FP32": "float32", "FP16": "float16", "INT64": "int64",
              "INT32": "int32", "INT16": "int16", "INT8": "int8", "UINT8": "uint8",
              "BOOL": "bool", "BYTES": "string"}
_START_SECONDS = 5.0
_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class MLflowOptions:
    # The model's signature in MLflow's JSON: {"inputs": [...], "outputs": [...]}.
    signature: dict[str, Any] | None = None
    # Where to read the signature at start-up when it is not given inline.
    signature_url: str | None = None


def signature_from_document(raw: bytes) -> Signature:
    """A signature from an MLmodel file (YAML), a signature JSON, or V2 model metadata."""
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError("the signature document is neither JSON nor YAML") from exc
    if not isinstance(doc, dict):
        raise ValueError("the signature document is not a mapping")
    if isinstance(doc.get("signature"), dict):  # an MLmodel file
        doc = doc["signature"]
    inputs = doc.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict) \
            and "datatype" in inputs[0]:  # Open Inference Protocol metadata
        def convert(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{"type": "tensor", "name": str(i.get("name") or ""),
                     "tensor-spec": {"dtype": _V2_DTYPES.get(str(i["datatype"]), "float64"),
                                     "shape": list(i.get("shape") or [-1])}} for i in items]
        doc = {"inputs": convert(inputs), "outputs": convert(doc.get("outputs") or [])}
    return predict_schema.parse_signature(doc)


def outputs_value(data: Any) -> struct_pb2.Value:
    """MLflow's answer (``{"predictions": ...}``, or the bare predictions of MLflow 1) as JSON."""
    if isinstance(data, dict) and "predictions" in data:
        data = data["predictions"]
    elif isinstance(data, dict) and "outputs" in data:
        data = data["outputs"]
    value = struct_pb2.Value()
    try:
        json_format.ParseDict(data, value)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise UpstreamError("upstream answered predictions the gateway cannot read",
                            kind="protocol") from exc
    return value


@register("mlflow")
class MLflowProvider(Provider):
    Options = MLflowOptions
    options: MLflowOptions

    def __init__(self, model: ModelConfig, options: MLflowOptions, sessions: SessionPool) -> None:
        super().__init__(model, options, sessions)
        self.signature = Signature()
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        if options.signature is not None:
            try:
                self.signature = predict_schema.parse_signature(options.signature)
            except ValueError as exc:
                raise ConfigError(f"models.{model.id}.options.signature", str(exc)) from None

    async def start(self) -> None:
        if self.options.signature_url and self.options.signature is None:
            loop = asyncio.get_running_loop()
            await self._fetch_signature(Call(deadline=loop.time() + _START_SECONDS))

    async def _fetch_signature(self, call: Call) -> None:
        url = self.options.signature_url
        assert url is not None
        self._fetched_at = asyncio.get_running_loop().time()
        try:
            raw = await request_bytes(self.sessions.get(url), "GET", url, call,
                                      api_key=self.api_key, headers={"Accept": "*/*"})
            self.signature = signature_from_document(raw)
            log.info("model %s: read its signature from %s", self.model.id, url)
        except (GatewayError, ValueError) as exc:
            log.warning("model %s: cannot read its signature from %s (%s); will retry",
                        self.model.id, url, exc)

    async def _current_signature(self, call: Call) -> Signature:
        if self.signature.inputs or not self.options.signature_url:
            return self.signature
        now = asyncio.get_running_loop().time()
        if self._fetched_at is None or now - self._fetched_at > _RETRY_SECONDS:
            async with self._lock:
                if not self.signature.inputs:
                    await self._fetch_signature(call)
        return self.signature

    async def predict(self, req: pb.PredictRequest, call: Call) -> pb.PredictResponse:
        signature = await self._current_signature(call)
        body = predict_schema.check_input(req, signature)
        url = self.url("invocations")
        data = await request_json(self.sessions.get(url), "POST", url, call, json_body=body,
                                  api_key=self.api_key)
        return pb.PredictResponse(model=req.model, outputs=outputs_value(data),
                                  input_schema=signature.inputs,
                                  output_schema=signature.outputs)
