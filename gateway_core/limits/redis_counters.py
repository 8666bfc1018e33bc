"""The counters in Redis, shared by every replica (see ``counters.py`` for the algorithms).

One Lua script admits a request against all its counters atomically: it checks every one, then
applies every one, or none, with the Redis server's own clock (``TIME``), so that replicas with
drifting clocks still count alike. Reconciliations and releases are queued and sent together
every ``FLUSH_SECONDS`` in one pipeline (off every request's path: one round trip per request,
not three). Keys expire by themselves: a rate key when its TAT has passed, a budget key when its
period turns, a concurrency set after its longest lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import redis.asyncio as aioredis

from gateway_core.limits.counters import Check, Counters, Decision, State

log = logging.getLogger(__name__)

# How long reconciliations and releases wait to be sent together.
FLUSH_SECONDS = 0.02
BATCH = 500

# ARGV: n, then per check: kind, limit, cost, seconds; then the lease name.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local lease = ARGV[2 + n * 4]
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local kind, limit, cost, secs = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]),
    tonumber(ARGV[b + 3])
  local key = KEYS[i]
  if kind == 'rate' then
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local new = tat + cost * secs / limit
    if new - now > secs + 1e-9 then return {0, i, tostring(new - secs - now)} end
  elseif kind == 'budget' then
    local used = tonumber(redis.call('GET', key) or '0')
    if used + cost > limit then return {0, i, tostring(secs)} end
  else
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    if redis.call('ZCARD', key) >= limit then return {0, i, '1'} end
  end
end
local out = {1}
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local kind, limit, cost, secs = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]),
    tonumber(ARGV[b + 3])
  local key = KEYS[i]
  if kind == 'rate' then
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then tat = now end
    local new = tat + cost * secs / limit
    redis.call('SET', key, string.format('%.6f', new), 'PX', math.ceil((new - now) * 1000) + 1000)
    local ahead = new - now
    table.insert(out, tostring(math.max(0, math.floor((secs - ahead) * limit / secs + 1e-9))))
    table.insert(out, tostring(ahead))
  elseif kind == 'budget' then
    local used = redis.call('INCRBY', key, cost)
    if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, math.ceil(secs) + 60) end
    table.insert(out, tostring(math.max(0, limit - used)))
    table.insert(out, tostring(secs))
  else
    redis.call('ZADD', key, now + secs, lease)
    redis.call('EXPIRE', key, math.ceil(secs) + 60)
    table.insert(out, tostring(limit - redis.call('ZCARD', key)))
    table.insert(out, '0')
  end
end
return out
"""

# ARGV: n, then per check: kind, limit, seconds, delta.
ADJUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
for i = 1, n do
  local b = 2 + (i - 1) * 4
  local kind, limit, secs, delta = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]),
    tonumber(ARGV[b + 3])
  local key = KEYS[i]
  if kind == 'rate' then
    local tat = tonumber(redis.call('GET', key) or tostring(now))
    local new = tat + delta * secs / limit
    if new > now then
      redis.call('SET', key, string.format('%.6f', new), 'PX',
                 math.ceil((new - now) * 1000) + 1000)
    else
      redis.call('DEL', key)
    end
  elseif kind == 'budget' then
    local used = redis.call('INCRBY', key, delta)
    if used < 0 then redis.call('SET', key, '0', 'KEEPTTL') end
    if redis.call('TTL', key) < 0 then redis.call('EXPIRE', key, math.ceil(secs) + 60) end
  end
end
return 1
"""


# ARGV: n, then per check: kind, limit, seconds.
PEEK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local out = {}
for i = 1, n do
  local b = 2 + (i - 1) * 3
  local kind, limit, secs = ARGV[b], tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local key = KEYS[i]
  if kind == 'rate' then
    local ahead = tonumber(redis.call('GET', key) or '0') - now
    if ahead < 0 then ahead = 0 end
    table.insert(out, tostring(math.max(0, math.floor((secs - ahead) * limit / secs + 1e-9))))
    table.insert(out, tostring(ahead))
  elseif kind == 'budget' then
    table.insert(out, tostring(math.max(0, limit - tonumber(redis.call('GET', key) or '0'))))
    table.insert(out, tostring(secs))
  else
    table.insert(out, tostring(math.max(0, limit - redis.call('ZCOUNT', key, now, '+inf'))))
    table.insert(out, '0')
  end
end
return out
"""


class RedisCounters(Counters):
    def __init__(self, url: str, prefix: str = "igw:") -> None:
        self.client: Any = aioredis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
        self.prefix = prefix
        self._admit = self.client.register_script(ADMIT)
        self._adjust = self.client.register_script(ADJUST)
        self._peek = self.client.register_script(PEEK)
        # Queued work: ("adjust", keys, args) and ("release", keys, lease).
        self._queue: list[tuple[str, list[str], Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def admit(self, checks: list[Check], lease: str) -> Decision:
        args: list[Any] = [len(checks)]
        for c in checks:
            args += [c.kind, c.limit, c.cost, c.seconds]
        args.append(lease)
        out = await self._admit(keys=[self.prefix + c.key for c in checks], args=args)
        if int(out[0]) == 0:
            return Decision(False, refused=int(out[1]) - 1, retry_after=float(out[2]))
        values = [float(v) for v in out[1:]]
        return Decision(True, tuple(State(int(values[i]), values[i + 1])
                                    for i in range(0, len(values), 2)))

    async def peek(self, checks: list[Check]) -> list[State]:
        if not checks:
            return []
        args: list[Any] = [len(checks)]
        for c in checks:
            args += [c.kind, c.limit, c.seconds]
        out = await self._peek(keys=[self.prefix + c.key for c in checks], args=args)
        values = [float(v) for v in out]
        return [State(int(values[i]), values[i + 1]) for i in range(0, len(values), 2)]

    def adjust_now(self, checks: list[Check], deltas: list[int]) -> None:
        pairs = [(c, d) for c, d in zip(checks, deltas, strict=True)
                 if d and c.kind != "concurrency"]
        if not pairs:
            return
        args: list[Any] = [len(pairs)]
        for c, d in pairs:
            args += [c.kind, c.limit, c.seconds, d]
        self._queue.append(("adjust", [self.prefix + c.key for c, _ in pairs], args))
        self._kick()

    def release_now(self, keys: list[str], lease: str) -> None:
        if keys:
            self._queue.append(("release", [self.prefix + k for k in keys], lease))
            self._kick()

    def _kick(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush(FLUSH_SECONDS))

    async def _flush(self, wait: float) -> None:
        if wait:
            await asyncio.sleep(wait)
        while self._queue:
            batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
            pipe = self.client.pipeline(transaction=False)
            for kind, keys, args in batch:
                if kind == "adjust":
                    await self._adjust(keys=keys, args=args, client=pipe)  # (queued)
                else:
                    for key in keys:
                        pipe.zrem(key, args)
            try:
                await pipe.execute()
            except Exception as exc:
                log.debug("limit counters: %d reconciliations lost: %s", len(batch), exc)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(Exception):
            await self._flush(0)
        await self.client.aclose()
