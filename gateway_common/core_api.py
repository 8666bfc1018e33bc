"""The one interface between the edge and the core: typed calls of the proto's RPCs.

``CoreAPI`` has two implementations. ``gateway_common.core_grpc.GrpcCore`` wraps the generated
stubs on a gRPC channel (``edge`` apart from the core, or ``listen.core_transport: grpc``);
``gateway_core.in_process.InProcessCore`` calls the core's intercepted handlers directly in the
caller's task (``serve``). Both take and give the proto's messages, run the same server
interceptors, and fail alike: ``grpc.aio.AioRpcError`` with the status code, details and trailing
metadata (DEADLINE_EXCEEDED past the deadline, UNAVAILABLE from a stopped core). A caller that is
cancelled, or leaves a stream's ``async with`` early, cancels the handler and its upstream call.

Each RPC is a typed descriptor (``CHAT``, ``CHAT_STREAM``, ...): ``core.unary(CHAT, request,
options)`` takes a ``pb.ChatRequest`` and gives a ``pb.ChatResponse`` to the type checker too.
The ``igw-*`` metadata keys the two sides exchange are defined here, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, TypeVar

from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from inference_gateway.v1 import admin_pb2 as apb
from inference_gateway.v1 import inference_pb2 as pb

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Resp_co = TypeVar("Resp_co", bound=Message, covariant=True)

Metadata = tuple[tuple[str, str | bytes], ...]

# Request metadata the edge sends.
REQUEST_ID_KEY = "x-request-id"
# The edge's deadline is its fallback, not the client's: the core applies the model's timeout.
DEFAULT_DEADLINE_KEY = "igw-default-deadline"
# The endpoint id an endpoint-dialect request came through (the core checks it).
ENDPOINT_KEY = "igw-endpoint"
# Set by the TGI routes and the oicm ``inputs`` form: the completion request is text generation on
# the model itself, which a chat model serves whatever its ``tasks`` (``ModelEntry.serves``).
GENERATE_KEY = "igw-generate"
# Trailing metadata the core sends.
REASON_KEY = "igw-reason"  # the finer reason of a failure (http_edge/errors.py maps it)
UPSTREAM_SECONDS_KEY = "igw-upstream-seconds"  # time spent waiting on the upstream
MODEL_KEY = "igw-model"  # the configured model id the request's name resolved to
# An upstream's own error fields (OpenAI's ``type``, ``param`` and ``code``), present only when the
# upstream gave them as strings (``gateway_core.errors.ErrorFields``).
ERROR_TYPE_KEY = "igw-error-type"
ERROR_PARAM_KEY = "igw-error-param"
ERROR_CODE_KEY = "igw-error-code"
# What served the request (SPEC §10): the model (a fallback's id when one served) and the number
# of upstream attempts, sent as initial metadata before a stream's first message and as trailing
# metadata; the edge sends them as ``x-gateway-model`` and ``x-gateway-attempts``.
SERVED_MODEL_KEY = "x-gateway-model"
ATTEMPTS_KEY = "x-gateway-attempts"
# "false" when a retry by the caller cannot help (the gateway retried already, or the failure is
# deterministic): the edge sends it as ``x-should-retry``, which the official SDKs obey.
SHOULD_RETRY_KEY = "igw-should-retry"
# The request's priority class (critical, standard, sheddable), as the caller asked for it.
PRIORITY_KEY = "igw-priority"
# How long to wait before retrying, as an upstream's 429 said it (HTTP ``Retry-After``'s value).
RETRY_AFTER_KEY = "retry-after"
# What the core tells the edge's access log (never forwarded to clients): the endpoint of the
# last attempt, the caller's token id, the end user, and "prompt,completion" tokens.
ENDPOINT_LOG_KEY = "igw-log-endpoint"
TOKEN_LOG_KEY = "igw-log-token"
END_USER_LOG_KEY = "igw-log-end-user"
USAGE_LOG_KEY = "igw-log-usage"
# Set by the edge on its calls: the core's own access log is for other gRPC callers.
FROM_EDGE_KEY = "igw-from-edge"
# OpenAI's rate-limit headers (x-ratelimit-limit-requests, ...), as metadata of the same names.
RATELIMIT_PREFIX = "x-ratelimit-"


@dataclass(frozen=True, slots=True)
class Rpc(Generic[Req, Resp]):
    """One method of the proto: its service, its name and the type of its answer."""

    service: str
    name: str
    response: type[Resp]

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


class Unary(Rpc[Req, Resp]):
    """A method answering one message."""


class ServerStream(Rpc[Req, Resp]):
    """A method answering a stream of messages."""


class CallOptions(NamedTuple):
    """What every call carries: its timeout in seconds (None: none) and its metadata."""

    timeout: float | None
    metadata: tuple[tuple[str, str], ...] = ()


class Reply(NamedTuple, Generic[Resp_co]):
    """A unary call's answer and its trailing metadata."""

    message: Resp_co
    trailing: Metadata


class CoreStream(Protocol[Resp_co]):
    """A server stream, used as ``async with core.stream(...) as messages: async for m in
    messages``. Leaving the block before the end cancels the call; ``trailing_metadata()``
    holds the core's trailers once the stream has ended."""

    async def __aenter__(self) -> AsyncIterator[Resp_co]: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> bool | None: ...

    def trailing_metadata(self) -> Metadata: ...

    def initial_metadata(self) -> Metadata:
        """The core's initial metadata, once the first message (or the end) has been read."""
        ...


class CoreAPI(Protocol):
    """How the edge calls the core (see the module's docstring)."""

    async def unary(self, rpc: Unary[Req, Resp], request: Req, options: CallOptions
                    ) -> Reply[Resp]: ...

    def stream(self, rpc: ServerStream[Req, Resp], request: Req, options: CallOptions
               ) -> CoreStream[Resp]: ...

    async def close(self) -> None: ...


def trailer(trailing: Metadata, key: str) -> str | None:
    """The value of ``key`` in trailing metadata (None when absent)."""
    for k, value in trailing:
        if k == key:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return None


INFERENCE = "inference_gateway.v1.Inference"
MODELS = "inference_gateway.v1.Models"
ADMIN = "inference_gateway.v1.Admin"
HEALTH = "grpc.health.v1.Health"

CHAT: Unary[pb.ChatRequest, pb.ChatResponse] = Unary(INFERENCE, "Chat", pb.ChatResponse)
CHAT_STREAM: ServerStream[pb.ChatRequest, pb.ChatChunk] = ServerStream(
    INFERENCE, "ChatStream", pb.ChatChunk)
COMPLETE: Unary[pb.CompletionRequest, pb.CompletionResponse] = Unary(
    INFERENCE, "Complete", pb.CompletionResponse)
COMPLETE_STREAM: ServerStream[pb.CompletionRequest, pb.CompletionChunk] = ServerStream(
    INFERENCE, "CompleteStream", pb.CompletionChunk)
EMBED: Unary[pb.EmbedRequest, pb.EmbedResponse] = Unary(INFERENCE, "Embed", pb.EmbedResponse)
RERANK: Unary[pb.RerankRequest, pb.RerankResponse] = Unary(
    INFERENCE, "Rerank", pb.RerankResponse)
CLASSIFY: Unary[pb.ClassifyRequest, pb.ClassifyResponse] = Unary(
    INFERENCE, "Classify", pb.ClassifyResponse)
TRANSCRIBE: Unary[pb.TranscribeRequest, pb.TranscribeResponse] = Unary(
    INFERENCE, "Transcribe", pb.TranscribeResponse)
GET_SPEECH_SCHEMA: Unary[pb.SpeechSchemaRequest, pb.SpeechSchema] = Unary(
    INFERENCE, "GetSpeechSchema", pb.SpeechSchema)
GENERATE_SPEECH: Unary[pb.SpeechRequest, pb.SpeechResponse] = Unary(
    INFERENCE, "GenerateSpeech", pb.SpeechResponse)
GENERATE_IMAGE: Unary[pb.ImageRequest, pb.ImageResponse] = Unary(
    INFERENCE, "GenerateImage", pb.ImageResponse)
TRANSLATE: Unary[pb.TranslateRequest, pb.TranslateResponse] = Unary(
    INFERENCE, "Translate", pb.TranslateResponse)
PREDICT: Unary[pb.PredictRequest, pb.PredictResponse] = Unary(
    INFERENCE, "Predict", pb.PredictResponse)

LIST_MODELS: Unary[pb.ListModelsRequest, pb.ListModelsResponse] = Unary(
    MODELS, "ListModels", pb.ListModelsResponse)
GET_MODEL: Unary[pb.GetModelRequest, pb.Model] = Unary(MODELS, "GetModel", pb.Model)

CREATE_TOKEN: Unary[apb.CreateTokenRequest, apb.CreateTokenResponse] = Unary(
    ADMIN, "CreateToken", apb.CreateTokenResponse)
LIST_TOKENS: Unary[apb.ListTokensRequest, apb.ListTokensResponse] = Unary(
    ADMIN, "ListTokens", apb.ListTokensResponse)
GET_TOKEN: Unary[apb.GetTokenRequest, apb.Token] = Unary(ADMIN, "GetToken", apb.Token)
REVOKE_TOKEN: Unary[apb.RevokeTokenRequest, apb.Token] = Unary(ADMIN, "RevokeToken", apb.Token)
UPDATE_TOKEN: Unary[apb.UpdateTokenRequest, apb.Token] = Unary(ADMIN, "UpdateToken", apb.Token)
QUERY_USAGE: Unary[apb.QueryUsageRequest, apb.QueryUsageResponse] = Unary(
    ADMIN, "QueryUsage", apb.QueryUsageResponse)
RELOAD_CONFIG: Unary[apb.ReloadConfigRequest, apb.ReloadConfigResponse] = Unary(
    ADMIN, "ReloadConfig", apb.ReloadConfigResponse)
ADMIN_LIST_MODELS: Unary[pb.ListModelsRequest, pb.ListModelsResponse] = Unary(
    ADMIN, "ListModels", pb.ListModelsResponse)

HEALTH_CHECK: Unary[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse] = Unary(
    HEALTH, "Check", health_pb2.HealthCheckResponse)
