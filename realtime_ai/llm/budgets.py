"""--llm_rpm and --llm_tpm for the whole job, however many workers share it. No Beam.

With a Redis URL (--cache_url), every worker takes from one token bucket per budget in Redis:
one Lua script refills each bucket by the time elapsed on Redis's own clock and takes a
request and its estimated tokens from both, or from neither, atomically. A bucket holds at
most one second of its budget, so no minute can see more than 1 + 1/60 of it; a request
larger than a bucket may take it when it is full and leave it in debt. The tokens reserved
are corrected once the answer's usage is known.

Without Redis, or while Redis cannot be reached, each worker paces itself at its share: the
budget divided by the number of workers the runner reports (pipelines/options.py). A Redis
outage is logged once and costs no event: the worker goes on at its share and asks Redis
again after REDIS_RETRY_SECONDS.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time

from realtime_ai.llm.limits import PACE_SHARE, RateLimiter

LOG = logging.getLogger(__name__)
REDIS_KEY_PREFIX = "realtime-ai:budget:"
REDIS_TIMEOUT_SECONDS = 0.5  # a Redis that does not answer holds a request this long at most
REDIS_RETRY_SECONDS = 10.0  # after an error, the per-worker share is used this long
BUCKET_SECONDS = 1.0  # a bucket holds this much of its budget: the largest burst
IDLE_EXPIRY_SECONDS = 3600  # a bucket no one used for this long is dropped (it would be full)

# KEYS: one bucket per budget. ARGV[1]: "take" (all or nothing; the seconds to wait before
# asking again, "0" when taken) or "settle" (costs added, or given back when negative, as
# they are); ARGV[2]: seconds an idle bucket is kept; then per bucket: refill per second,
# capacity, cost. Buckets are hashes {level, at}, `at` on Redis's clock (TIME is allowed
# before writes with effects replication, the only kind since Redis 7).
_BUCKET_SCRIPT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local levels, wait = {}, 0
for i, key in ipairs(KEYS) do
  local rate, capacity, cost = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]),
                               tonumber(ARGV[3 * i + 2])
  local state = redis.call('HMGET', key, 'level', 'at')
  local level = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  level = math.min(capacity, level + math.max(0, now - at) * rate)
  local needed = math.min(cost, capacity)
  if level < needed then wait = math.max(wait, (needed - level) / rate) end
  levels[i] = level
end
local take = ARGV[1] == 'settle' or wait == 0
for i, key in ipairs(KEYS) do
  local level = levels[i]
  if take then level = math.min(level - tonumber(ARGV[3 * i + 2]), tonumber(ARGV[3 * i + 1])) end
  redis.call('HSET', key, 'level', tostring(level), 'at', tostring(now))
  redis.call('EXPIRE', key, ARGV[2])
end
if take then return '0' end
return tostring(wait)
"""


def worker_share(budget: float | None, workers: int) -> float | None:
    """One worker's share of a job-wide budget split between `workers` workers."""
    return None if budget is None else budget / max(1, workers)


def bucket_name(*parts: object) -> str:
    """A short stable name for what a budget is shared by (e.g. endpoints and models)."""
    canonical = json.dumps([str(part) for part in parts], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class RedisBucket:
    """The job's request and token buckets in Redis: `take` a request's share of both."""

    def __init__(self, url: str, name: str, requests_per_minute: float | None,
                 tokens_per_minute: float | None):
        import redis.asyncio  # only when a Redis URL is configured

        self._redis = redis.asyncio.from_url(url, socket_timeout=REDIS_TIMEOUT_SECONDS,
                                             socket_connect_timeout=REDIS_TIMEOUT_SECONDS)
        self._script = self._redis.register_script(_BUCKET_SCRIPT)
        self.errors = (redis.RedisError, OSError, asyncio.TimeoutError)
        # (key, refill per second) of each budget given; paced a little under, as locally
        self._buckets = [(f"{REDIS_KEY_PREFIX}{name}:{what}", per_minute * PACE_SHARE / 60.0)
                         for what, per_minute in (("requests", requests_per_minute),
                                                  ("tokens", tokens_per_minute))
                         if per_minute]

    async def _run(self, mode: str, costs: dict[str, float]) -> float:
        args: list[object] = [mode, IDLE_EXPIRY_SECONDS]
        for key, rate in self._buckets:
            args += [repr(rate), repr(max(1.0, rate * BUCKET_SECONDS)), repr(costs[key])]
        result = await self._script(keys=[key for key, _ in self._buckets], args=args)
        return float(result)

    def _costs(self, requests: float, tokens: float) -> dict[str, float]:
        return {key: requests if key.endswith(":requests") else tokens
                for key, _ in self._buckets}

    async def take(self, requests: float, tokens: float) -> float:
        """0 when `requests` and `tokens` were taken from the buckets; else the seconds to
        wait before asking again (nothing taken). Raises one of `errors` when Redis fails."""
        return await self._run("take", self._costs(requests, tokens))

    async def settle(self, tokens: float) -> None:
        """Take `tokens` more (or give them back, when negative) whatever the level."""
        await self._run("settle", self._costs(0.0, tokens))

    async def aclose(self) -> None:
        await self._redis.aclose()


class JobBudget:
    """The job's rate budgets as seen by one worker: the shared bucket in Redis when there
    is one and it answers, else this worker's share, paced locally (limits.RateLimiter).
    A 429 makes this worker wait for its Retry-After and lowers its pace either way (with
    Redis, each request then costs 1/pace of a request: the others keep their pace)."""

    def __init__(self, requests_per_minute: float | None, tokens_per_minute: float | None,
                 workers: int = 1, shared: RedisBucket | None = None):
        self.local = RateLimiter(worker_share(requests_per_minute, workers),
                                 worker_share(tokens_per_minute, workers))
        self._shared = shared if requests_per_minute or tokens_per_minute else None
        self._shared_down_until: float | None = None  # while set, the local share is used
        self._outage_logged = False
        self._lock = asyncio.Lock()  # one waiter per worker asks Redis at a time

    def _use_shared(self) -> bool:
        if self._shared is None:
            return False
        return self._shared_down_until is None or time.monotonic() >= self._shared_down_until

    def _shared_failed(self, error: BaseException) -> None:
        self._shared_down_until = time.monotonic() + REDIS_RETRY_SECONDS
        if not self._outage_logged:
            self._outage_logged = True
            LOG.warning("shared rate budget in Redis unavailable (%s): each worker paces "
                        "itself at its share of --llm_rpm/--llm_tpm until it answers", error)

    def _shared_answered(self) -> None:
        if self._shared_down_until is not None:
            LOG.warning("shared rate budget in Redis answers again: used by this worker")
            self._shared_down_until = None
            self._outage_logged = False

    async def acquire(self, tokens: int) -> None:
        """Wait for this request's turn: one request and `tokens` of the token budget."""
        if not self._use_shared():
            await self.local.acquire(tokens)
            return
        async with self._lock:
            await self.local.wait_out_pause()
            scale = 1.0 / self.local.pace
            while True:
                try:
                    wait = await self._shared.take(scale, tokens * scale)
                except self._shared.errors as error:
                    self._shared_failed(error)
                    break
                self._shared_answered()
                if wait <= 0:
                    return
                await asyncio.sleep(wait)
        await self.local.acquire(tokens)

    async def settle(self, reserved: int, used: int) -> None:
        """Correct what `acquire` reserved for a request by what its answer used."""
        if used == reserved:
            return
        if not self._use_shared():
            self.local.settle(reserved, used)
            return
        try:
            await self._shared.settle(used - reserved)
        except self._shared.errors as error:
            self._shared_failed(error)

    def rate_limited(self, retry_after: float | None) -> None:
        self.local.rate_limited(retry_after)

    def succeeded(self) -> None:
        self.local.succeeded()

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()
