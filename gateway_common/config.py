"""The gateway's configuration: one typed tree loaded from YAML and the environment.

Every section is a frozen dataclass. ``load_dataclass`` builds one from plain data and names the
exact bad key and why (``models[0].task: must be one of ...``), which is what ``check-config``
prints. Providers validate their own ``options`` with the same function.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import yaml

from gateway_common.budget import BUFFER_COST_FACTOR

T = TypeVar("T")

TASKS = (
    "chat",
    "completion",
    "embedding",
    "rerank",
    "classification",
    "transcription",
    "speech",
    "image",
    "translation",
    "predict",
)
TaskName = Literal[
    "chat",
    "completion",
    "embedding",
    "rerank",
    "classification",
    "transcription",
    "speech",
    "image",
    "translation",
    "predict",
]


# The model names TGI clients send ("tgi"; huggingface_hub's InferenceClient sends "dummy" when
# given a URL and no model): they route to ``tgi_model``, as TGI serves one model, unless a
# configured model has the name.
TGI_NAMES = ("tgi", "dummy")


class ConfigError(ValueError):
    """A configuration value is wrong; ``path`` names the key (``models[0].task``)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class TlsConfig:
    """TLS of the listeners: HTTPS on the edge and TLS on the core's gRPC port, with this
    certificate and key (PEM files, re-read on SIGHUP)."""

    cert_file: str | None = None
    key_file: str | None = None
    # Mutual TLS for gRPC callers: their certificates must be signed by this CA.
    client_ca_file: str | None = None
    # The edge's channel to a core running apart (``edge``, or ``serve`` with core_transport
    # grpc): trust this CA for the core's certificate, and present this certificate when the
    # core asks for one.
    core_ca_file: str | None = None
    core_client_cert_file: str | None = None
    core_client_key_file: str | None = None
    # The name the core's certificate is checked against (default: the host of core_address).
    core_server_name: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    # Where the edge finds the core; defaults to host:grpc_port.
    core_address: str | None = None
    # Port of the core's own /metrics when it runs apart from the edge (0: off).
    core_metrics_port: int = 0
    # How `serve` (edge and core in one process) connects them: "local" hands each call to the
    # core's handlers in process; "grpc" goes through the core's gRPC port, as `edge` always does.
    core_transport: Literal["local", "grpc"] = "local"
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Let other processes listen on the same ports (set for the workers of `serve --workers`).
    reuse_port: bool = False


@dataclass(frozen=True)
class RateLimits:
    """What one token, JWT subject or model may use (null: no limit). Minutes and periods are
    counted by the gateway (``docs/LIMITS.md``): a minute slides, a day or month is the UTC
    calendar's."""

    # Requests per minute.
    rpm: int | None = None
    # Tokens per minute: prompt tokens estimated at admission, reconciled with the usage.
    tpm: int | None = None
    # Requests in flight at once.
    max_concurrency: int | None = None
    # Token budgets per UTC day and per UTC calendar month.
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.rpm, self.tpm, self.max_concurrency,
                                            self.daily_tokens, self.monthly_tokens))


@dataclass(frozen=True)
class LimitsConfig:
    # Largest JSON request body the edge accepts.
    max_body_bytes: int = 10 * 1024 * 1024
    # Largest audio or image upload.
    max_upload_bytes: int = 25 * 1024 * 1024
    # Largest rendered custom chat template, and how long rendering may take.
    max_template_bytes: int = 64 * 1024
    template_timeout_seconds: float = 1.0
    # Longest prompt or input in characters, on every task (chat messages, the completion prompt,
    # embedding and classification inputs, rerank query and texts, translation text, speech input,
    # image prompt, the predict payload); longer is 413.
    max_prompt_chars: int = 1_000_000
    # Largest request header line or field (bytes); longer is 400.
    max_header_bytes: int = 8190
    # Time a client has to send a request's headers, from its first byte (or from the connection
    # opening); past it the connection is closed (408 when some of the head had arrived).
    header_timeout_seconds: float = 20.0
    # A request body must arrive at body_min_rate_bytes per second or more, measured over each
    # window of body_timeout_seconds; a slower (or stalled) sender is cut off.
    body_timeout_seconds: float = 20.0
    body_min_rate_bytes: int = 500
    # How long an idle keep-alive connection stays open between requests.
    keepalive_timeout_seconds: float = 75.0
    # Open client connections per process; past it a new connection is answered 503 (with
    # Retry-After) and closed, except the health probes, which are still served.
    max_connections: int = 1024
    # Bytes of request bodies and upstream answers read whole at once, process-wide, each
    # counted BUFFER_COST_FACTOR (6) times (its parsed form, the message built from it and its
    # encoding live beside it); one that does not fit is refused with 503 and Retry-After
    # instead of growing the process.
    max_buffered_bytes: int = 512 * 1024 * 1024
    # Where rate limits and budgets are counted: "memory" (exact, one process) or "redis"
    # (shared by every replica; the URL from the environment variable redis_url_env).
    backend: Literal["memory", "redis"] = "memory"
    redis_url_env: str = "GATEWAY_REDIS_URL"
    # Prefix of the gateway's keys in Redis (gateways sharing one Redis share counters only
    # under the same prefix).
    redis_prefix: str = "igw:"
    # When Redis cannot be reached: admit (counted in /metrics, logged once per outage) or
    # refuse with 503.
    on_backend_error: Literal["fail_open", "fail_closed"] = "fail_open"


@dataclass(frozen=True)
class TimeoutsConfig:
    # Default request deadline when neither the caller nor the model sets one.
    default_seconds: float = 120.0
    # Longest deadline a caller may ask for with OICM-Request-Timeout.
    max_seconds: float = 3600.0
    # How long in-flight requests may finish on shutdown.
    shutdown_grace_seconds: float = 10.0
    # On SIGTERM, how long /health/ready (and gRPC health) fail while requests are still served,
    # before the listeners close: the time a load balancer needs to stop sending new ones.
    drain_seconds: float = 0.0
    # gRPC keepalive ping interval between the edge and the core.
    keepalive_seconds: float = 30.0
    # Stage timeouts every model gets unless it sets its own (``models[].timeouts``); null: the
    # request's deadline alone bounds the stage.
    connect: float | None = 5.0
    headers: float | None = None
    first_token: float | None = None
    idle: float | None = 60.0


@dataclass(frozen=True)
class StorageConfig:
    backend: Literal["sqlite", "postgres"] = "sqlite"
    # Directory of the embedded SQLite store.
    data_dir: str = "./data"
    # PostgreSQL DSN, read from this environment variable when backend is postgres.
    dsn_env: str = "GATEWAY_DATABASE_URL"


@dataclass(frozen=True)
class JwtConfig:
    enabled: bool = False
    algorithms: list[Literal["RS256", "ES256", "HS256"]] = field(default_factory=lambda: ["RS256"])
    issuer: str | None = None
    audience: str | None = None
    # A PEM public key file, a JWKS file, or (HS256 only) an environment variable with the secret.
    public_key_file: str | None = None
    jwks_file: str | None = None
    secret_env: str | None = None
    leeway_seconds: float = 30.0
    # The claim that lists the models the token may call ("*" for all).
    models_claim: str = "models"
    # Limits of each JWT subject (counted per ``sub``).
    limits: RateLimits = field(default_factory=RateLimits)


@dataclass(frozen=True)
class AuthConfig:
    enabled: bool = True
    # The admin credential comes from this environment variable, or is generated and stored on
    # first start of a fresh data dir.
    admin_token_env: str = "GATEWAY_ADMIN_TOKEN"
    # How long a validated token may be served from the cache (revocation invalidates at once
    # on the same replica; other replicas see it within this bound).
    cache_seconds: float = 1.0
    jwt: JwtConfig = field(default_factory=JwtConfig)


BALANCES = ("least_outstanding", "round_robin", "least_loaded", "prefix_affinity")
PRIORITIES = ("critical", "standard", "sheddable")


@dataclass(frozen=True)
class UpstreamConfig:
    """One endpoint of a model's pool; unset fields take the model's."""

    url: str
    weight: int = 1
    api_key_env: str | None = None
    upstream_model: str | None = None
    # Requests in flight on this endpoint at most (0: no cap).
    max_concurrency: int = 0


@dataclass(frozen=True)
class RetryConfig:
    # Attempts per pool, each on an endpoint not tried yet for the request (so a pool of one
    # endpoint makes one attempt).
    attempts: int = 3
    # Base of the jittered exponential backoff between attempts.
    backoff_ms: float = 50.0
    # Retries at most this share of the pool's requests (plus min_retries), so that a failing
    # pool is not hammered.
    budget_percent: float = 20.0
    min_retries: int = 3


@dataclass(frozen=True)
class StageTimeouts:
    """Seconds per stage of an upstream call (null: the gateway's ``timeouts`` default)."""

    connect: float | None = None
    headers: float | None = None
    first_token: float | None = None
    idle: float | None = None


@dataclass(frozen=True)
class HealthConfig:
    # Consecutive connect errors, 5xx or timeouts that eject an endpoint.
    consecutive_failures: int = 5
    # The first ejection's length; each next one doubles it, up to max_ejection_seconds.
    ejection_seconds: float = 5.0
    max_ejection_seconds: float = 300.0
    # Active checks: GET this path on each endpoint's origin every check_seconds (null: off);
    # a non-2xx answer or no answer ejects the endpoint until a check passes.
    check_path: str | None = None
    check_seconds: float = 5.0


@dataclass(frozen=True)
class ModelConfig:
    """One served model: where its upstream is and how to call it."""

    id: str
    task: TaskName
    provider: str
    # Other tasks it serves besides ``task`` (a vLLM model: [chat, completion]); ``task`` is the
    # one ``/v1/models`` reports first and the one a request of no other listed task must match.
    tasks: list[TaskName] = field(default_factory=list)
    # Base URL of the upstream (e.g. http://vllm:8000/v1); not needed by the mock provider.
    upstream_url: str | None = None
    # The model name sent upstream (defaults to id).
    upstream_model: str | None = None
    # The upstream credential is read from this environment variable.
    api_key_env: str | None = None
    timeout_seconds: float | None = None
    # Default request parameters (temperature, top_p, max_tokens, ...).
    defaults: dict[str, Any] = field(default_factory=dict)
    # Other names that route here (endpoint and mlflow dialect names).
    aliases: list[str] = field(default_factory=list)
    owned_by: str = "inference-gateway"
    # Largest upstream answer read whole for this model (bytes); larger is a 502.
    max_response_bytes: int = 64 * 1024 * 1024
    # Provider-specific settings, validated by the provider.
    options: dict[str, Any] = field(default_factory=dict)
    # A pool of endpoints instead of upstream_url (SPEC §10), and how requests are spread.
    upstreams: list[UpstreamConfig] = field(default_factory=list)
    balance: Literal["least_outstanding", "round_robin", "least_loaded",
                     "prefix_affinity"] = "least_outstanding"
    retries: RetryConfig = field(default_factory=RetryConfig)
    # Other models of the same task tried in order when this one's pool is exhausted.
    fallbacks: list[str] = field(default_factory=list)
    timeouts: StageTimeouts = field(default_factory=StageTimeouts)
    health: HealthConfig = field(default_factory=HealthConfig)
    # Requests in flight on the model at most (0: no cap); past it they wait up to
    # queue_timeout seconds, at most max_queued of them, then get 429.
    max_concurrency: int = 0
    queue_timeout: float = 2.0
    max_queued: int = 1000
    # least_loaded: how often each endpoint's /metrics is read (off the request path).
    load_poll_seconds: float = 0.5
    # prefix_affinity: how many leading characters of the prompt choose the endpoint.
    prefix_chars: int = 256
    # A chat stream whose endpoint fails after its first token continues on another endpoint
    # from the prompt plus the text already sent (OpenAI-compatible upstreams that take
    # continue_final_message, as vLLM does); off: the stream ends with an error event.
    resume_streams: bool = False
    # What all callers of the model may use together (requests and tokens per minute, budgets).
    limits: RateLimits = field(default_factory=RateLimits)

    def pool(self) -> list[UpstreamConfig]:
        """The endpoints: ``upstreams``, or the one ``upstream_url`` as a pool of one."""
        if self.upstreams:
            return self.upstreams
        return [UpstreamConfig(url=self.upstream_url)] if self.upstream_url else []


@dataclass(frozen=True)
class CorsConfig:
    # Origins whose pages may call the API from a browser ("https://app.example.com"; "*" for
    # any). Empty: CORS off, as a browser's same-origin rule has it.
    allow_origins: list[str] = field(default_factory=list)
    # How long a browser may cache a preflight's answer.
    max_age_seconds: int = 600


@dataclass(frozen=True)
class TracingConfig:
    # OpenTelemetry spans (the otel extra), exported as the OTEL_* variables say.
    enabled: bool = False


@dataclass(frozen=True)
class GatewayConfig:
    listen: ListenConfig = field(default_factory=ListenConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    timeouts: TimeoutsConfig = field(default_factory=TimeoutsConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    models: list[ModelConfig] = field(default_factory=list)
    # Endpoint dialect: endpoint id -> the model ids it serves.
    endpoints: dict[str, list[str]] = field(default_factory=dict)
    # The model the TGI routes (/generate, /generate_stream, /, /info) serve; the name "tgi" (what
    # TGI clients send to the Messages API) routes to it too.
    tgi_model: str | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cors: CorsConfig = field(default_factory=CorsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    # One line per request on stdout (docs/OPERATIONS.md): json, text or off.
    access_log: Literal["json", "text", "off"] = "json"

    @property
    def core_address(self) -> str:
        return self.listen.core_address or f"{self.listen.host}:{self.listen.grpc_port}"

    def model(self, model_id: str) -> ModelConfig | None:
        for m in self.models:
            if m.id == model_id or model_id in m.aliases:
                return m
        return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(path, f"must be {_type_name(tp)}; got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(path, f"must be {_type_name(tp)}; got null")
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(path, f"must be {_type_name(tp)}; got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"must be a list; got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"must be a mapping; got {type(value).__name__}")
        _key_tp, val_tp = typing.get_args(tp)
        return {str(k): _convert(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return load_dataclass(tp, value, path)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be a boolean; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer; got {value!r}")
        if value < 0:
            raise ConfigError(path, f"must not be negative; got {value}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"must be a number; got {value!r}")
        if value < 0:
            raise ConfigError(path, f"must not be negative; got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string; got {value!r}")
        return value
    raise ConfigError(path, f"unsupported type {tp!r}")  # pragma: no cover - a programming error


def load_dataclass(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from plain data, naming the exact bad key when it does not fit."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a mapping; got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in fields:
            raise ConfigError(sub, f"unknown key (expected one of: {', '.join(fields)})")
        kwargs[key] = _convert(hints[key], value, sub)
    for name, f in fields.items():
        if (
            name not in kwargs
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            raise ConfigError(f"{path}.{name}" if path else name, "is required")
    return cls(**kwargs)


def validate(config: GatewayConfig) -> GatewayConfig:
    """Checks that span several keys."""
    seen: dict[str, str] = {}
    for i, m in enumerate(config.models):
        if not m.id.strip() or m.id != m.id.strip():
            raise ConfigError(f"models[{i}].id", "must be a non-empty name without spaces around")
        for name in (m.id, *m.aliases):
            if name in seen:
                raise ConfigError(f"models[{i}]", f"name {name!r} is already used by {seen[name]}")
            seen[name] = f"models[{i}]"
        if m.timeout_seconds is not None and m.timeout_seconds <= 0:
            raise ConfigError(f"models[{i}].timeout_seconds", "must be greater than 0")
        _validate_upstream(f"models[{i}]", m)
        _validate_pool(f"models[{i}]", m, config)
        validate_rate_limits(f"models[{i}].limits", m.limits)
        if m.max_response_bytes * BUFFER_COST_FACTOR > config.limits.max_buffered_bytes:
            raise ConfigError(f"models[{i}].max_response_bytes",
                              f"an answer this large (counted {BUFFER_COST_FACTOR} times) would "
                              "never fit in limits.max_buffered_bytes; lower it or raise that")
    for endpoint, ids in config.endpoints.items():
        for j, model_id in enumerate(ids):
            if config.model(model_id) is None:
                raise ConfigError(f"endpoints.{endpoint}[{j}]", f"no model named {model_id!r}")
    if config.tgi_model is not None and config.model(config.tgi_model) is None:
        raise ConfigError("tgi_model", f"no model named {config.tgi_model!r}")
    for name in ("http_port", "grpc_port", "core_metrics_port"):
        if getattr(config.listen, name) > 65535:
            raise ConfigError(f"listen.{name}", "must be a port number (0-65535)")
    if config.timeouts.default_seconds <= 0:
        raise ConfigError("timeouts.default_seconds", "must be greater than 0")
    _validate_jwt(config.auth.jwt)
    validate_rate_limits("auth.jwt.limits", config.auth.jwt.limits)
    _validate_tls(config.listen.tls)
    for i, origin in enumerate(config.cors.allow_origins):
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.hostname
                              or parts.path not in ("", "/") or parts.query):
            raise ConfigError(f"cors.allow_origins[{i}]",
                              "must be an origin (scheme://host[:port]) or \"*\"")
    return config


def _validate_tls(tls: TlsConfig) -> None:
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("listen.tls.key_file" if tls.cert_file else "listen.tls.cert_file",
                          "a certificate needs its key, and a key its certificate")
    if tls.client_ca_file and not tls.cert_file:
        raise ConfigError("listen.tls.client_ca_file", "mutual TLS needs cert_file and key_file")
    if bool(tls.core_client_cert_file) != bool(tls.core_client_key_file):
        raise ConfigError("listen.tls.core_client_key_file",
                          "the edge's client certificate needs its key, and the key its "
                          "certificate")
    for name in ("cert_file", "key_file", "client_ca_file", "core_ca_file",
                 "core_client_cert_file", "core_client_key_file"):
        path = getattr(tls, name)
        if path and not os.path.isfile(path):
            raise ConfigError(f"listen.tls.{name}", f"no such file: {path}")


def validate_rate_limits(path: str, limits: RateLimits) -> None:
    for name in ("rpm", "tpm", "max_concurrency", "daily_tokens", "monthly_tokens"):
        value = getattr(limits, name)
        if value is not None and value < 1:
            raise ConfigError(f"{path}.{name}", "must be at least 1 (or null: no limit)")


def _validate_upstream(path: str, m: ModelConfig) -> None:
    if m.upstream_url is not None:
        _validate_url(f"{path}.upstream_url", m.upstream_url, m.api_key_env)
    for j, u in enumerate(m.upstreams):
        _validate_url(f"{path}.upstreams[{j}].url", u.url, u.api_key_env or m.api_key_env)


def _validate_url(path: str, url: str, api_key_env: str | None) -> None:
    """An upstream URL the HTTP client can call, with at most one source of credentials (the URL
    itself is never quoted: it may hold a password)."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError:
        raise ConfigError(path, "has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(path, "must be an http:// or https:// URL with a host")
    if (parts.username or parts.password) and api_key_env:
        raise ConfigError(path,
                          "carries credentials (user:password@) and api_key_env is set too; an "
                          "upstream request carries one Authorization header: keep one of them")


def _validate_pool(path: str, m: ModelConfig, config: GatewayConfig) -> None:
    """The traffic settings of one model (SPEC §10)."""
    if m.upstreams and m.upstream_url:
        raise ConfigError(f"{path}.upstreams", "and upstream_url are both set: keep one")
    for j, u in enumerate(m.upstreams):
        if u.weight < 1:
            raise ConfigError(f"{path}.upstreams[{j}].weight", "must be at least 1")
    if m.retries.attempts < 1:
        raise ConfigError(f"{path}.retries.attempts", "must be at least 1")
    if m.health.consecutive_failures < 1:
        raise ConfigError(f"{path}.health.consecutive_failures", "must be at least 1")
    if m.health.check_path is not None and not m.health.check_path.startswith("/"):
        raise ConfigError(f"{path}.health.check_path", "must start with /")
    for name in ("connect", "headers", "first_token", "idle"):
        if getattr(m.timeouts, name) == 0:
            raise ConfigError(f"{path}.timeouts.{name}", "must be greater than 0")
    for j, fallback in enumerate(m.fallbacks):
        other = config.model(fallback)
        where = f"{path}.fallbacks[{j}]"
        if other is None:
            raise ConfigError(where, f"no model named {fallback!r}")
        if other is m:
            raise ConfigError(where, "is the model itself")
        if m.task not in (other.task, *other.tasks):
            raise ConfigError(where, f"model {fallback!r} does not serve the task {m.task!r}")


def _validate_jwt(jwt: JwtConfig) -> None:
    if not jwt.enabled:
        return
    if not jwt.algorithms:
        raise ConfigError("auth.jwt.algorithms", "must name at least one of RS256, ES256, HS256")
    if {"RS256", "ES256"} & set(jwt.algorithms) and not (jwt.public_key_file or jwt.jwks_file):
        raise ConfigError("auth.jwt", "RS256 and ES256 need public_key_file or jwks_file")
    if "HS256" in jwt.algorithms and not jwt.secret_env:
        raise ConfigError("auth.jwt.secret_env", "is required for HS256 (the variable that "
                          "holds the secret)")


def parse_config(data: Any) -> GatewayConfig:
    return validate(load_dataclass(GatewayConfig, data))


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read a YAML config file; raises ConfigError naming the bad key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {p}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"{p} is not valid YAML{where}") from exc
    return parse_config(data)


def replace(config: T, **changes: Any) -> T:
    """A copy of a config section with some fields changed (flags override the file)."""
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
