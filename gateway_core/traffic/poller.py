"""Off the request path: each endpoint's load read from its own metrics (``least_loaded``) and
the optional active health checks.

Load is what the model server says of itself, one number per endpoint (smaller is better):
requests waiting count most, then requests running, then KV-cache use. The metric names are
the engines' own: vLLM ``vllm:num_requests_waiting``, ``vllm:num_requests_running``,
``vllm:kv_cache_usage_perc`` (``gpu_cache_usage_perc`` in older versions); TGI
``tgi_queue_size`` and ``tgi_batch_current_size``; llama.cpp (``--metrics``)
``llamacpp:requests_deferred`` and ``llamacpp:requests_processing``. An endpoint whose metrics
cannot be read keeps no load (the balancer then counts it as busy, not idle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from urllib.parse import urlsplit

import aiohttp

from gateway_core.traffic.pool import Endpoint, Pool

log = logging.getLogger(__name__)

# metric name -> (role, weight): waiting requests weigh most.
_WAITING = ("vllm:num_requests_waiting", "tgi_queue_size", "llamacpp:requests_deferred")
_RUNNING = ("vllm:num_requests_running", "tgi_batch_current_size",
            "llamacpp:requests_processing")
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)", re.MULTILINE)
_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


def parse_load(text: str) -> float | None:
    """One load figure from a Prometheus text page (None when it names none of the known
    metrics): waiting x 10 + running + KV use (0-1) x 5, summed over label sets."""
    waiting = running = kv = 0.0
    found = False
    for name, _labels, value in _LINE.findall(text):
        try:
            number = float(value)
        except ValueError:
            continue
        if name in _WAITING:
            waiting += number
        elif name in _RUNNING:
            running += number
        elif name in _KV:
            kv = max(kv, number)
        else:
            continue
        found = True
    return waiting * 10 + running + kv * 5 if found else None


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


class Poller:
    """Runs one task per pool that needs polling (least_loaded, or active checks)."""

    def __init__(self, pools: Sequence[Pool]) -> None:
        self.pools = [p for p in pools if p.config.balance == "least_loaded"
                      or p.health.check_path is not None]
        self.tasks: list[asyncio.Task[None]] = []
        self.session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if not self.pools:
            return
        self.session = aiohttp.ClientSession(timeout=_TIMEOUT)
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._run(p)) for p in self.pools]

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks = []
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _run(self, pool: Pool) -> None:
        loops = []
        if pool.config.balance == "least_loaded":
            loops.append(self._every(pool.config.load_poll_seconds,
                                     lambda: [self._load(e) for e in pool.endpoints]))
        if (path := pool.health.check_path) is not None:
            loops.append(self._every(pool.health.check_seconds,
                                     lambda: [self._check(pool, e, path) for e in pool.endpoints]))
        await asyncio.gather(*loops)

    @staticmethod
    async def _every(seconds: float, jobs: Callable[[], list[Coroutine[None, None, None]]]
                     ) -> None:
        while True:
            await asyncio.gather(*jobs())
            await asyncio.sleep(seconds)

    async def _load(self, e: Endpoint) -> None:
        assert self.session is not None
        try:
            async with self.session.get(f"{origin(e.config.url)}/metrics") as resp:
                text = await resp.text() if resp.status == 200 else ""
        except (aiohttp.ClientError, TimeoutError, OSError):
            text = ""
        e.load = parse_load(text)

    async def _check(self, pool: Pool, e: Endpoint, path: str) -> None:
        assert self.session is not None
        try:
            async with self.session.get(f"{origin(e.config.url)}{path}") as resp:
                ok = 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok == e.checked_down:  # changed
            log.warning("upstream %s of model %s %s its health check", e.label, pool.model,
                        "passes" if ok else "fails")
        e.checked_down = not ok
        pool.changed()
        if ok:
            pool.admission.wake()
