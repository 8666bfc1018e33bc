"""The model registry: configured models, their providers, and the task each one serves."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field

from gateway_common.config import (
    TGI_NAMES,
    ConfigError,
    GatewayConfig,
    ModelConfig,
    TimeoutsConfig,
    UpstreamConfig,
)
from gateway_core.errors import ModelNotFound, NotFound, TaskMismatch
from gateway_core.providers.base import (
    Provider,
    SessionPool,
    build_options,
    provider_class,
    provider_names,
)
from gateway_core.traffic.poller import Poller
from gateway_core.traffic.pool import Endpoint, Pool, now
from inference_gateway.v1 import inference_pb2 as pb

TASK_ENUM: dict[str, pb.Task] = {
    "chat": pb.TASK_CHAT,
    "completion": pb.TASK_COMPLETION,
    "embedding": pb.TASK_EMBEDDING,
    "rerank": pb.TASK_RERANK,
    "classification": pb.TASK_CLASSIFICATION,
    "transcription": pb.TASK_TRANSCRIPTION,
    "speech": pb.TASK_SPEECH,
    "image": pb.TASK_IMAGE,
    "translation": pb.TASK_TRANSLATION,
    "predict": pb.TASK_PREDICT,
}
TASK_NAME = {v: k for k, v in TASK_ENUM.items()}



@dataclass(frozen=True, slots=True)
class ModelEntry:
    config: ModelConfig
    # Its endpoints (one provider each), balancing, health, retries and admission.
    pool: Pool
    # Deadline used when the caller sets none: the model's timeout, else the gateway default.
    timeout: float
    # Names that route here besides the configured ones (``tgi``).
    extra_aliases: tuple[str, ...] = ()
    # Its pool, then its fallbacks' pools in order (set once every entry exists).
    chain: list[Pool] = field(default_factory=list)

    @property
    def provider(self) -> Provider:
        """The provider of its first endpoint: for what does not depend on the endpoint (the
        load time, a speech schema)."""
        return self.pool.endpoints[0].provider

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks it serves: its ``task``, then the others its config lists in ``tasks``."""
        return tuple(dict.fromkeys((self.config.task, *self.config.tasks)))

    def serves(self, task: str, *, generate: bool = False) -> bool:
        """Whether a request of ``task`` may use this model. ``generate``: a completion request
        that is text generation on the model itself (the TGI routes, the oicm ``inputs`` form),
        which a chat model serves with its completion whatever its ``tasks``."""
        return task in self.tasks or (generate and task == "completion" and "chat" in self.tasks)

    def to_proto(self) -> pb.Model:
        c = self.config
        return pb.Model(
            id=c.id, task=TASK_ENUM[c.task], provider=c.provider,
            upstream_model=c.upstream_model or c.id, owned_by=c.owned_by,
            created=self.provider.created, aliases=[*c.aliases, *self.extra_aliases],
            status=self.status(), tasks=[TASK_ENUM[t] for t in self.tasks],
        )

    def status(self) -> str:
        t = now()
        up = sum(e.up(t) for e in self.pool.endpoints)
        if up == len(self.pool.endpoints):
            return "ready"
        return "degraded" if up else "unavailable"

    def admin_proto(self) -> pb.Model:
        """``to_proto`` with the state of each endpoint, for operators."""
        model = self.to_proto()
        t = now()
        for e in self.pool.endpoints:
            state = model.upstreams.add(
                endpoint=e.label, state=e.state(t), weight=e.weight, in_flight=e.outstanding,
                failures=e.failures, ejections=e.ejections,
                retry_in_seconds=max(0.0, e.ejected_until - t) if e.ejected_until else 0.0)
            if e.load is not None:
                state.load = e.load
        return model


def build_pool(m: ModelConfig, options: object, cls: type[Provider], sessions: SessionPool,
               defaults: TimeoutsConfig) -> Pool:
    """One provider per endpoint, each seeing the model's config with its endpoint's URL, name
    and credential."""
    endpoints = []
    for u in m.pool() or [UpstreamConfig(url="")]:
        if m.upstreams:
            view = dataclasses.replace(
                m, upstream_url=u.url, upstream_model=u.upstream_model or m.upstream_model,
                api_key_env=u.api_key_env or m.api_key_env, upstreams=[])
        else:
            view = m
        endpoints.append(Endpoint(u, cls(view, options, sessions)))
    return Pool(m, endpoints, defaults)


def validate_providers(config: GatewayConfig) -> None:
    """Check each model's provider name and options (raises ConfigError naming the key)."""
    for i, m in enumerate(config.models):
        cls = provider_class(m.provider)
        if cls is None:
            raise ConfigError(f"models[{i}].provider",
                              f"unknown provider {m.provider!r} (one of: {', '.join(provider_names())})")
        build_options(cls, m, f"models[{i}]")
        if m.resume_streams and m.provider != "openai":
            raise ConfigError(f"models[{i}].resume_streams",
                              "needs provider 'openai' (an upstream that continues an assistant "
                              "message, as vLLM's continue_final_message does)")
        if m.provider != "mock" and not m.pool():
            raise ConfigError(f"models[{i}].upstream_url",
                              f"is required by provider {m.provider!r} (or upstreams)")


class ModelRegistry:
    """Resolves a model id or alias to its entry, checking the task (and, for the endpoint
    dialect, that the endpoint exists and serves the model)."""

    def __init__(self, entries: list[ModelEntry],
                 endpoints: dict[str, list[str]] | None = None) -> None:
        self._entries = entries
        self._by_name: dict[str, ModelEntry] = {}
        for e in entries:
            for name in (e.config.id, *e.config.aliases, *e.extra_aliases):
                self._by_name[name] = e
        # endpoint id -> the ids of the models it serves, in config order.
        self._endpoints = {
            endpoint: list(dict.fromkeys(self._by_name[n].id for n in names))
            for endpoint, names in (endpoints or {}).items()
        }
        self.created = int(time.time())
        for e in entries:
            e.chain[:] = [e.pool, *(self._by_name[f].pool for f in e.config.fallbacks)]
        self.poller = Poller([e.pool for e in entries])
        self._closing: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: GatewayConfig, sessions: SessionPool) -> ModelRegistry:
        validate_providers(config)
        entries = []
        for i, m in enumerate(config.models):
            pcls = provider_class(m.provider)
            assert pcls is not None
            pool = build_pool(m, build_options(pcls, m, f"models[{i}]"), pcls, sessions,
                              config.timeouts)
            # The TGI names route to tgi_model, unless a configured model already has the name.
            tgi = config.tgi_model is not None and config.model(config.tgi_model) is m
            extra = tuple(n for n in TGI_NAMES if tgi and config.model(n) is None)
            entries.append(ModelEntry(m, pool, m.timeout_seconds or config.timeouts.default_seconds,
                                      extra))
        return cls(entries, config.endpoints)

    def _providers(self) -> list[Provider]:
        return [ep.provider for e in self._entries for ep in e.pool.endpoints]

    async def reload(self, config: GatewayConfig, sessions: SessionPool) -> None:
        """Serve ``config``'s models from now on (raises ConfigError naming the bad key, and
        changes nothing, when they are not valid). Requests in flight keep the entries they
        resolved and finish on them; the old pools' polling stops at once, their gauges leave
        /metrics, and their providers close after ``timeouts.max_seconds`` (no request outlives
        its deadline)."""
        new = ModelRegistry.from_config(config, sessions)
        await new.start()
        old_entries, old_poller = self._entries, self.poller
        self._entries, self._by_name, self._endpoints = new._entries, new._by_name, new._endpoints
        self.poller = new.poller
        self.created = int(time.time())
        await old_poller.close()
        for e in old_entries:
            e.pool.close()
        providers = [ep.provider for e in old_entries for ep in e.pool.endpoints]

        async def close_later() -> None:
            await asyncio.sleep(config.timeouts.max_seconds)
            await asyncio.gather(*(p.close() for p in providers), return_exceptions=True)

        self._closing = asyncio.get_running_loop().create_task(close_later())

    async def start(self) -> None:
        await asyncio.gather(*(p.start() for p in self._providers()))
        self.poller.start()

    async def close(self) -> None:
        closing = getattr(self, "_closing", None)
        if closing is not None:
            closing.cancel()
        await self.poller.close()
        for e in self._entries:
            e.pool.close()
        await asyncio.gather(*(p.close() for p in self._providers()), return_exceptions=True)

    def get(self, name: str) -> ModelEntry:
        entry = self._by_name.get(name)
        if entry is None:
            if not name:
                raise ModelNotFound("the request names no model")
            if name in TGI_NAMES:
                raise ModelNotFound(f"no model serves the TGI routes ('{name}'): set tgi_model in "
                                    "the gateway config")
            shown = name if len(name) <= 200 else name[:200] + "..."
            raise ModelNotFound(f"the model '{shown}' does not exist")
        return entry

    def endpoint(self, endpoint: str) -> list[str]:
        """The ids of the models an endpoint serves; NotFound when there is no such endpoint."""
        ids = self._endpoints.get(endpoint)
        if ids is None:
            shown = endpoint if len(endpoint) <= 200 else endpoint[:200] + "..."
            raise NotFound(f"the endpoint '{shown}' does not exist", reason="endpoint_not_found")
        return ids

    def resolve(self, name: str, task: str, endpoint: str | None = None, *,
                generate: bool = False) -> ModelEntry:
        served = self.endpoint(endpoint) if endpoint is not None else None
        entry = self.get(name)
        if served is not None and entry.id not in served:
            raise ModelNotFound(
                f"the model '{name[:200]}' is not served by the endpoint '{endpoint}'"
                f" (it serves: {', '.join(served)})"
            )
        if not entry.serves(task, generate=generate):
            noun = "task" if len(entry.tasks) == 1 else "tasks"
            names = ", ".join(f"'{t}'" for t in entry.tasks)
            raise TaskMismatch(f"model '{entry.id}' serves the {noun} {names}, not '{task}'")
        return entry

    def entries(self) -> list[ModelEntry]:
        return list(self._entries)
