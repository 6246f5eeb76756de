"""Answers to identical requests are paid for once. No Beam.

Beam retries failed bundles and the `openai` client sends no idempotency key, so without
this a retried bundle would pay again for every event in it. `CachingBackend` keys each
request by (task, prompt version, model, normalised data): a request identical to one
answered within the TTL is served from the worker's LRU (or from Redis when `cache_url` is
set, shared by all workers), and one identical to a request still in flight waits for that
answer instead of sending its own. Failures are never cached, nor a fast answer standing in
for the deep model's (routing.py): under the deep model's key it would be served in place of
the deep model's own answer once that model is back. A cache that is down only costs money:
Redis errors are logged and the request goes to the model.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from realtime_ai.llm import tasks
from realtime_ai.llm.base import LlmBackend, LlmConfig, LlmPermanentError, LlmResult

LOG = logging.getLogger(__name__)
REDIS_KEY_PREFIX = "realtime-ai:llm:"
Answer = TypeVar("Answer")  # what a cache keeps: a task's LlmResult, a question's text


def request_key(task: str, model: str, data: Mapping[str, Any]) -> str:
    """The same for the same request to the same model with the same prompt version."""
    canonical = json.dumps([task, tasks.PROMPT_VERSIONS[task], model, data], sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class LruTtlCache(Generic[Answer]):
    """At most `max_entries` answers, each for `ttl_seconds`; the least recently used goes."""

    def __init__(self, max_entries: int, ttl_seconds: float):
        self._entries: collections.OrderedDict[str, tuple[float, Answer]] = (
            collections.OrderedDict())
        self._max = max_entries
        self._ttl = ttl_seconds

    def get(self, key: str) -> Answer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, result = entry
        if expires_at < time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return result

    def put(self, key: str, result: Answer) -> None:
        self._entries[key] = (time.monotonic() + self._ttl, result)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


class RedisCache:
    """The same answers in Redis (SET with EX), shared by every worker."""

    def __init__(self, url: str, ttl_seconds: float):
        import redis.asyncio  # only when a Redis URL is configured

        self._redis = redis.asyncio.from_url(url)
        self._ttl = max(1, round(ttl_seconds))
        self._errors = (redis.RedisError, OSError)

    async def get(self, key: str) -> LlmResult | None:
        try:
            value = await self._redis.get(REDIS_KEY_PREFIX + key)
        except self._errors as error:
            LOG.warning("response cache unavailable, asking the model: %s", error)
            return None
        # an answer from the cache cost nothing: what the first one spent stays with it
        return None if value is None else LlmResult(**{**json.loads(value), "spent": ()})

    async def put(self, key: str, result: LlmResult) -> None:
        try:
            await self._redis.set(REDIS_KEY_PREFIX + key,
                                  json.dumps(dataclasses.asdict(result)), ex=self._ttl)
        except self._errors as error:
            LOG.warning("response cache unavailable, answer not shared: %s", error)

    async def aclose(self) -> None:
        await self._redis.aclose()


class CachingBackend:
    def __init__(self, inner: LlmBackend, config: LlmConfig):
        self._inner = inner
        self._model = config.model  # the model a tier asks: part of an answer's key
        self._local: LruTtlCache[LlmResult] = LruTtlCache(config.cache_size,
                                                          config.cache_ttl_seconds)
        self._shared = (RedisCache(config.cache_url, config.cache_ttl_seconds)
                        if config.cache_url else None)
        self._in_flight: dict[str, asyncio.Task] = {}

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        key = request_key(task, self._model(tier), data)
        cached = self._local.get(key)
        if cached is not None:
            return dataclasses.replace(cached, cached=True)
        running = self._in_flight.get(key)
        if running is not None:  # the same request is on its way: share its answer
            try:
                return dataclasses.replace(await asyncio.shield(running), cached=True)
            except LlmPermanentError as error:  # its requests are counted with the first
                raise LlmPermanentError(str(error), error.reason,
                                        latency_ms=error.latency_ms) from None
        running = asyncio.ensure_future(self._fetch(key, task, data, tier))
        self._in_flight[key] = running
        running.add_done_callback(lambda _: self._in_flight.pop(key, None))
        return await asyncio.shield(running)

    async def _fetch(self, key: str, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        if self._shared is not None:
            shared = await self._shared.get(key)
            if shared is not None:
                self._local.put(key, shared)
                return dataclasses.replace(shared, cached=True)
        result = await self._inner.complete(task, data, tier)
        if result.stands_in:
            return result
        self._local.put(key, result)
        if self._shared is not None:
            await self._shared.put(key, result)
        return result

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()
        await self._inner.aclose()
