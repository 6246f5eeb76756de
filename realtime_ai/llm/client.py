"""Model backends: any OpenAI-compatible endpoint, or the embedded local model (local_model.py)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx2
import openai

from realtime_ai.llm import base, failures, tasks
from realtime_ai.llm.base import LlmConfig, LlmPermanentError, LlmResult
from realtime_ai.llm.cache import CachingBackend
from realtime_ai.llm.credentials import api_key
from realtime_ai.llm.failures import classify
from realtime_ai.llm.limits import CircuitBreaker, CircuitOpen, RateLimiter
from realtime_ai.llm.local_model import LocalBackend
from realtime_ai.llm.packing import PackingBackend

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 20.0
# The openai client insists on a key; endpoints such as vLLM or Ollama ignore it.
PLACEHOLDER_KEY = "no-key-configured"
# Answer tokens budgeted before a call (the real count settles nothing: budgets are paced).
EXPECTED_ANSWER_TOKENS = 60


def _content(body: Any) -> str | None:
    """The first choice's message text of a chat completion body, or InvalidAnswer."""
    try:
        return body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise tasks.InvalidAnswer("response has no choices[0].message.content") from None


def backoff_seconds(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Full-jitter exponential backoff, never shorter than what the server asked for."""
    jitter = rng.uniform(0.0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt))
    return max(jitter, retry_after or 0.0)


class OpenAiBackend:
    """Chat completions with a strict JSON schema; retried, validated, never guessed."""

    def __init__(self, config: LlmConfig):
        self._config = config
        self._api_key = api_key(config.api_key_env) or PLACEHOLDER_KEY
        self._client: openai.AsyncOpenAI | None = None
        self._rng = random.Random()
        self._limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute)
        self._breaker = CircuitBreaker()
        # Requests in flight; callers may hold more elements than this when they are packed.
        self._request_slots = asyncio.Semaphore(config.concurrency)

    def _openai(self) -> openai.AsyncOpenAI:
        if self._client is None:  # created on the event loop that will use it
            # aiohttp, not the default httpx transport: a third less client CPU per call
            # and no server-side stall reading request bodies (benchmarks/llm_throughput.py).
            # One connection per request slot, all kept alive.
            limits = httpx2.Limits(max_connections=self._config.concurrency,
                                   max_keepalive_connections=self._config.concurrency)
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key, base_url=self._config.base_url,
                timeout=self._config.timeout_seconds, max_retries=0,
                http_client=openai.DefaultAioHttpClient(limits=limits))
        return self._client

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        model = self._config.fast_model if tier == base.FAST else self._config.deep_model
        messages = tasks.build_messages(task, data)
        expected_tokens = tasks.estimate_tokens(messages) + EXPECTED_ANSWER_TOKENS
        attempts = self._config.max_retries + 1
        for attempt in range(attempts):
            try:
                result = await self._attempt(task, model, messages, expected_tokens)
            except (openai.OpenAIError, tasks.InvalidAnswer, asyncio.TimeoutError,
                    json.JSONDecodeError, CircuitOpen) as error:
                failure = classify(error)
                if failure.kind == failures.RATE_LIMITED:
                    self._limiter.rate_limited(failure.retry_after)
                elif failure.kind == failures.ENDPOINT:
                    self._breaker.failed()
                if not failure.retriable or attempt + 1 == attempts:
                    raise LlmPermanentError(self._redact(
                        f"{task} via {model} failed after {attempt + 1} attempt(s): "
                        f"{failure.reason}"), attempts=attempt + 1) from None
                await asyncio.sleep(backoff_seconds(attempt, failure.retry_after, self._rng))
                continue
            self._limiter.succeeded()
            return dataclasses.replace(result, attempts=attempt + 1)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, task: str, model: str, messages: list[dict],
                       expected_tokens: int) -> LlmResult:
        self._breaker.before_call()
        await self._limiter.acquire(expected_tokens)
        async with self._request_slots:
            started = time.perf_counter()
            # The client's generic post sends our ready JSON body and returns the raw
            # response: create() re-walks the deep schema and builds pydantic models for
            # every call, CPU that capped a worker below its concurrency bound.
            raw = await self._openai().post(
                "/chat/completions", cast_to=httpx2.Response,
                body={"model": model, "messages": messages, "temperature": 0,
                      "response_format": tasks.response_format(task)})
        self._breaker.succeeded()  # the endpoint answered; the answer may still be invalid
        body = raw.json()
        answer = tasks.parse_answer(task, _content(body))
        usage = body.get("usage") or {}
        return LlmResult(
            answer=answer, model=model, latency_ms=(time.perf_counter() - started) * 1000.0,
            input_tokens=int(usage.get("prompt_tokens", 0)),
            output_tokens=int(usage.get("completion_tokens", 0)))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()


class LatencyRouter:
    """Deep-tier calls get `latency_budget_ms`; one that overruns is cut (cancelled, so it
    is not paid further) and the fast model answers the same task instead."""

    def __init__(self, inner: base.LlmBackend, budget_ms: float):
        self._inner = inner
        self._budget = budget_ms / 1000.0

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        if tier != base.DEEP:
            return await self._inner.complete(task, data, tier)
        started = time.perf_counter()
        try:
            return await asyncio.wait_for(self._inner.complete(task, data, tier), self._budget)
        except TimeoutError:
            result = await self._inner.complete(task, data, base.FAST)
            total_ms = (time.perf_counter() - started) * 1000.0
            return dataclasses.replace(result, fell_back=True, latency_ms=total_ms)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_backend(config: LlmConfig) -> base.LlmBackend:
    if config.backend == "local":
        return LocalBackend()
    if config.backend == "openai":
        backend = OpenAiBackend(config)
        if config.fast_batch_size > 1:
            backend = PackingBackend(backend, config)
        if config.latency_budget_ms:
            backend = LatencyRouter(backend, config.latency_budget_ms)
        return CachingBackend(backend, config)
    raise ValueError(f"unknown LLM backend {config.backend!r}")
