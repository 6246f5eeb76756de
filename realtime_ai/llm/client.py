"""Model backends: any OpenAI-compatible endpoint, or the embedded local model (local_model.py)."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections.abc import Mapping
from typing import Any

from realtime_ai.llm import auth, base, budgets, failures, tasks
from realtime_ai.llm.base import (
    LatencyBudgetExceeded,
    LlmConfig,
    LlmPermanentError,
    LlmResult,
    Spend,
    ms_since,
)
from realtime_ai.llm.cache import CachingBackend
from realtime_ai.llm.credentials import api_key
from realtime_ai.llm.endpoints import Endpoint, make_pools
from realtime_ai.llm.failures import classify
from realtime_ai.llm.lazy_openai import openai
from realtime_ai.llm.limits import CircuitOpen
from realtime_ai.llm.local_model import DegradingBackend, LocalBackend
from realtime_ai.llm.memo import MemoBackend
from realtime_ai.llm.packing import PackingBackend
from realtime_ai.llm.routing import LatencyRouter
from realtime_ai.llm.transport import ChatCompletions

BACKOFF_BASE_SECONDS = 0.25
BACKOFF_CAP_SECONDS = 20.0
# A bearer is always sent, as the openai client did; endpoints such as vLLM or Ollama ignore it.
PLACEHOLDER_KEY = "no-key-configured"
# Answer tokens reserved from the token budget before a call; the answer's usage corrects it.
EXPECTED_ANSWER_TOKENS = 60


def _json_body(raw: bytes) -> dict:
    """The response body as a JSON object, or InvalidAnswer."""
    try:
        body = json.loads(raw)
    except ValueError:  # not JSON, or not text at all
        raise tasks.InvalidAnswer("response body is not JSON") from None
    if not isinstance(body, dict):
        raise tasks.InvalidAnswer(f"response body is a JSON {type(body).__name__}, not an "
                                  "object")
    return body


def _content(body: Mapping[str, Any]) -> Any:
    """The first choice's message content of a chat completion body, of whatever type (the
    answer's parser checks it), or None."""
    try:
        return body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None


def _cut_at_max_tokens(body: Mapping[str, Any]) -> bool:
    try:
        return body["choices"][0]["finish_reason"] == "length"
    except (KeyError, IndexError, TypeError):
        return False


def _token_count(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, Mapping) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def usage_tokens(usage: Any, prompt_tokens: int, content: Any) -> tuple[int, int]:
    """(input, output) tokens of an answered request: as the endpoint reports them in `usage`,
    or where it does not as non-negative integers, as we estimate them (a call that was
    answered is never counted as free)."""
    reported_in = _token_count(usage, "prompt_tokens")
    reported_out = _token_count(usage, "completion_tokens")
    if reported_out is None:
        reported_out = tasks.estimate_tokens(content) if isinstance(content, str) else 0
    return prompt_tokens if reported_in is None else reported_in, reported_out


def backoff_seconds(attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Full-jitter exponential backoff, never shorter than what the server asked for."""
    jitter = rng.uniform(0.0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt))
    return max(jitter, retry_after or 0.0)


class OpenAiBackend:
    """Chat completions with a strict JSON schema; retried, validated, never guessed."""

    def __init__(self, config: LlmConfig):
        self._config = config
        self._api_key = api_key(config.api_key_env) or PLACEHOLDER_KEY
        # --llm_auth=azure: this worker's own Entra ID tokens, asked for before every request
        self._tokens = (auth.BearerTokens(config.auth_scope) if config.auth == auth.AUTH_AZURE
                        else None)
        # each endpoint's breaker: a probe cut short (its event's deep call over budget) gives
        # way to another after the request deadline
        self._pools = make_pools({tier: config.endpoint_urls(tier)
                                  for tier in (base.FAST, base.DEEP)},
                                 probe_timeout_seconds=config.timeout_seconds)
        self._rng = random.Random()
        self._rates = _job_budget(config)
        self._budget = (config.latency_budget_ms / 1000.0 if config.latency_budget_ms
                        else None)
        # Requests in flight, `concurrency` per model (callers may hold more elements than
        # this when they are packed): a tier's own, so a slow deep model never holds the fast
        # model's slots (sharing 64, 101 deep answers of 3 s each held the main command's
        # scoring to 228 transactions/s against 318 on slots of its own: model_overlap.py
        # --deep-latency-ms 3000). Providers limit each model apart; tiers naming the same
        # model at the same endpoints share one limit.
        limited = {tier: (config.endpoint_urls(tier), config.model(tier))
                   for tier in (base.FAST, base.DEEP)}
        slots = {key: asyncio.Semaphore(config.concurrency) for key in set(limited.values())}
        self._request_slots = {tier: slots[key] for tier, key in limited.items()}
        # one connection per request slot of every limit that reaches the endpoint
        self._connections = {url: config.concurrency * sum(url in urls for urls, _ in slots)
                             for urls, _ in slots for url in urls}

    def _transport(self, endpoint: Endpoint) -> ChatCompletions:
        if endpoint.client is None:  # created on the event loop that will use it
            # all kept alive
            endpoint.client = ChatCompletions(endpoint.label, self._tokens or self._api_key,
                                              connections=self._connections[endpoint.base_url])
        return endpoint.client

    def endpoints(self) -> list[Endpoint]:
        """Every endpoint of either tier, once, with its counters."""
        return list({id(e): e for pool in self._pools.values() for e in pool.endpoints}.values())

    def _redact(self, text: str) -> str:
        for secret in (self._api_key, self._tokens and self._tokens.current):
            text = text.replace(secret, "***") if secret else text
        return text

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        model = self._config.model(tier)
        messages = tasks.build_messages(task, data)
        prompt_tokens = tasks.estimate_tokens(messages)
        spent: list[Spend] = []  # every request of this event, kept even when it is cut
        started = time.perf_counter()
        budget = self._budget if tier == base.DEEP else None
        try:
            async with asyncio.timeout(budget) as over_budget:
                return await self._attempts(task, model, tier, messages, prompt_tokens,
                                            tasks.max_answer_tokens(task, data), spent, started)
        except TimeoutError:
            if over_budget.expired():
                raise LatencyBudgetExceeded(tuple(spent)) from None
            raise

    async def _attempts(self, task: str, model: str, tier: str, messages: list[dict],
                        prompt_tokens: int, max_tokens: int, spent: list[Spend],
                        started: float) -> LlmResult:
        attempts = self._config.max_retries + 1
        for attempt in range(attempts):
            try:
                answer, endpoint = await self._attempt(task, model, tier, messages,
                                                       prompt_tokens, max_tokens, spent)
            except (openai.OpenAIError, tasks.InvalidAnswer, TimeoutError, CircuitOpen,
                    auth.SignInFailed) as error:
                failure = classify(error)
                if failure.kind == failures.RATE_LIMITED:
                    self._rates.rate_limited(failure.retry_after)
                if not failure.retriable or attempt + 1 == attempts:
                    raise LlmPermanentError(
                        self._redact(f"{task} via {model} failed after {attempt + 1} "
                                     f"attempt(s): {failure.reason}"),
                        reason=failure.summary, spent=tuple(spent),
                        latency_ms=ms_since(started)) from None
                await asyncio.sleep(backoff_seconds(attempt, failure.retry_after, self._rng))
                continue
            self._rates.succeeded()
            return LlmResult(answer=answer, model=model, spent=tuple(spent),
                             latency_ms=ms_since(started), endpoint=endpoint.label,
                             prompt_version=tasks.PROMPT_VERSIONS[task])
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _attempt(self, task: str, model: str, tier: str, messages: list[dict],
                       prompt_tokens: int, max_tokens: int, spent: list[Spend]
                       ) -> tuple[dict, Endpoint]:
        """One request, its cost added to `spent` whatever comes of it; the valid answer and
        the endpoint that gave it. Each endpoint's breaker hears how the endpoint did: any
        HTTP answer but a 5xx means it is up (its answer may still be invalid)."""
        reserved = prompt_tokens + EXPECTED_ANSWER_TOKENS
        await self._rates.acquire(reserved)
        async with self._request_slots[tier]:
            # when the request can go: load and health as they are now (CircuitOpen when
            # every endpoint of the tier is failing)
            endpoint = self._pools[tier].pick()
            transport = self._transport(endpoint)  # made once: not part of any request's time
            endpoint.in_flight += 1
            endpoint.requests += 1
            started = time.perf_counter()
            try:
                # One deadline for the whole request (connect, send, the whole answer): a
                # timeout per read would let an answer dripped a byte at a time run forever.
                async with asyncio.timeout(self._config.timeout_seconds):
                    raw = await transport.post(
                        tasks.chat_request(task, model, messages, max_tokens))
            except (TimeoutError, asyncio.CancelledError) as error:
                # sent and never answered (timed out, or cut by the latency budget): the
                # endpoint may bill the prompt, so it is counted as estimated
                spent.append(Spend(model, ms_since(started), input_tokens=prompt_tokens,
                                   failure="cut" if isinstance(error, asyncio.CancelledError)
                                   else "timed out"))
                if isinstance(error, TimeoutError):
                    _endpoint_failed(endpoint)
                raise
            except openai.OpenAIError as error:
                failure = classify(error)
                spent.append(Spend(model, ms_since(started), failure=failure.summary))
                if failure.kind == failures.ENDPOINT:
                    _endpoint_failed(endpoint)
                elif isinstance(error, openai.APIStatusError):
                    endpoint.breaker.succeeded()  # a 4xx or a 429: the endpoint is up
                raise
            finally:
                endpoint.in_flight -= 1
        endpoint.breaker.succeeded()
        latency_ms = ms_since(started)
        try:
            body = _json_body(raw)
        except tasks.InvalidAnswer:
            spent.append(Spend(model, latency_ms, prompt_tokens, failure="invalid answer"))
            raise
        content = _content(body)
        spend = Spend(model, latency_ms, *usage_tokens(body.get("usage"), prompt_tokens, content))
        await self._rates.settle(reserved, spend.input_tokens + spend.output_tokens)
        try:
            if content is None:
                raise tasks.InvalidAnswer("response has no choices[0].message.content")
            if _cut_at_max_tokens(body):
                raise tasks.InvalidAnswer("answer cut at max_tokens (longer than any valid "
                                          "answer)")
            answer = tasks.parse_answer(task, content)
        except tasks.InvalidAnswer:
            spent.append(dataclasses.replace(spend, failure="invalid answer"))
            raise
        spent.append(spend)
        endpoint.answers += 1
        return answer, endpoint

    async def aclose(self) -> None:
        for endpoint in self.endpoints():
            if endpoint.client is not None:
                await endpoint.client.close()
        await self._rates.aclose()


def _job_budget(config: LlmConfig) -> budgets.JobBudget:
    """--llm_rpm/--llm_tpm for the job: a bucket in Redis shared by every worker that uses the
    same endpoints and models (with --cache_url), else this worker's share."""
    shared = None
    if config.cache_url and (config.requests_per_minute or config.tokens_per_minute):
        name = budgets.bucket_name(*(config.endpoint_urls(tier) for tier in (base.FAST,
                                                                           base.DEEP)),
                                   config.fast_model, config.deep_model)
        shared = budgets.RedisBucket(config.cache_url, name, config.requests_per_minute,
                                     config.tokens_per_minute)
    return budgets.JobBudget(config.requests_per_minute, config.tokens_per_minute,
                             config.budget_workers, shared)


def _endpoint_failed(endpoint: Endpoint) -> None:
    """A 5xx, a timeout or a lost connection: counted, and told to its breaker."""
    endpoint.failures += 1
    endpoint.breaker.failed()


def make_backend(config: LlmConfig) -> base.LlmBackend:
    if config.backend == "local":
        return LocalBackend()
    if config.backend == "openai":
        backend = OpenAiBackend(config)
        if config.fast_batch_size > 1:
            backend = PackingBackend(backend, config)
        if config.latency_budget_ms:
            backend = LatencyRouter(backend, config.latency_budget_ms / 1000.0)
        backend = CachingBackend(backend, config)
        if config.memo:
            backend = MemoBackend(backend, config)
        if config.on_model_failure == base.DEGRADE:
            backend = DegradingBackend(backend)
        return backend
    raise ValueError(f"unknown LLM backend {config.backend!r}")
