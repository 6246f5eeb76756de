"""The contract between the pipeline and any model backend. Pure: no Beam import.

A backend answers one *task* (which fixes the instruction and the JSON schema of the answer)
for one *data* dict (the event and its context, sent as delimited data, never as
instructions), using one *tier* of model (fast or deep). It returns a validated answer or
raises `LlmPermanentError`, which the pipeline turns into a dead-letter row.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol

# Tasks: each has an instruction and an answer schema in realtime_ai.llm.tasks.
TRANSACTION_RISK = "transaction_risk"
TRANSACTION_ANALYSIS = "transaction_analysis"
METRIC_ANOMALY = "metric_anomaly"
DASHBOARD_INSIGHT = "dashboard_insight"
# Several transaction_risk requests packed into one: {"transactions": [data, ...]}.
TRANSACTION_RISK_PACKED = "transaction_risk_packed"
TASKS = (TRANSACTION_RISK, TRANSACTION_ANALYSIS, METRIC_ANOMALY, DASHBOARD_INSIGHT,
         TRANSACTION_RISK_PACKED)

FAST = "fast"
DEEP = "deep"

# What the `model` column says when the embedded local model answered.
LOCAL_MODEL_LABEL = "local-rules-v1 (deterministic rules, not an LLM)"

# What to do with an event the model could not answer (--on_model_failure).
DEGRADE = "degrade"  # the local rules answer it; its row says so and why
DEAD_LETTER = "dead_letter"  # it goes to the dead letters (and rows that can, keep no answer)
ON_MODEL_FAILURE = (DEGRADE, DEAD_LETTER)


def degraded_label(reason: str) -> str:
    """The `model` column of an answer the local rules gave because the model failed."""
    return f"local-rules-v1 (degraded: {reason})"


@dataclasses.dataclass(frozen=True)
class LlmConfig:
    """Everything needed to build a backend on a worker; picklable, holds no secret."""

    backend: str = "local"  # "local" or "openai"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable on the worker
    fast_model: str = "gpt-4o-mini"
    deep_model: str = "gpt-4o"
    timeout_seconds: float = 30.0
    max_retries: int = 4
    concurrency: int = 64  # requests in flight per worker, per model (client.py)
    fast_batch_size: int = 1  # transactions packed into one fast-tier request
    batch_wait_ms: float = 50.0  # longest a request waits for others to pack or gather with
    # Streaming: requests gathered in keyed state before the model step (GatherForModel); False:
    # handed to it through a Reshuffle, where the runner's bundles carry what arrived (Flink)
    gather_in_state: bool = True
    requests_per_minute: float | None = None  # client-side budgets of the job; None: none
    tokens_per_minute: float | None = None
    budget_workers: int = 1  # workers that split the budgets when no Redis bucket is shared
    cache_ttl_seconds: float = 60.0  # identical requests within this are answered once
    cache_size: int = 100_000  # answers kept per worker
    cache_url: str | None = None  # redis://host:port/db: a cache shared by all workers
    latency_budget_ms: float | None = None  # a deep call overrunning it goes to the fast tier
    memo: str | None = None  # redis://host:port/db or a folder: answers remembered by event
    auth: str = "key"  # "key": api_key_env's key; "azure": Entra ID tokens (llm/auth.py)
    auth_scope: str = "https://cognitiveservices.azure.com/.default"
    fast_base_url: str | None = None  # a tier's own endpoints, instead of base_url's
    deep_base_url: str | None = None
    on_model_failure: str = DEGRADE  # one of ON_MODEL_FAILURE

    def endpoint_urls(self, tier: str) -> tuple[str | None, ...]:
        """The tier's endpoints: comma-separated base URLs; (None,): OpenAI's own."""
        spec = (self.fast_base_url if tier == FAST else self.deep_base_url) or self.base_url
        urls = tuple(url.strip() for url in (spec or "").split(",") if url.strip())
        return urls or (None,)

    def model(self, tier: str) -> str:
        """The model the tier asks."""
        return self.fast_model if tier == FAST else self.deep_model


def resolve_backend(backend: str | None, base_url: str | None) -> str:
    """The explicit backend, else openai when an endpoint or key is configured, else local."""
    if backend:
        return backend
    return "openai" if base_url or os.environ.get("OPENAI_API_KEY") else "local"


@dataclasses.dataclass(frozen=True)
class Spend:
    """What one request cost, whatever came of it (answered, failed, timed out, cut).

    A packed request is shared by the events it carried: each holds a share of its tokens,
    and only the first counts the request itself (`requests` 0 for the others).
    """

    model: str
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    requests: int = 1
    failure: str | None = None  # why it gave no usable answer; None when it did


@dataclasses.dataclass(frozen=True)
class LlmResult:
    """A schema-valid answer and what it cost: every request spent on it, failed ones too."""

    answer: Mapping[str, Any]
    model: str  # what the row's `model` column says
    latency_ms: float  # from the first attempt to the answer, retries and waits included
    spent: tuple[Spend, ...] = ()
    cached: bool = False  # served from the response cache or the memo: no call, no cost
    remembered: bool = False  # served from the memo of answers by event (memo.py)
    fell_back: bool = False  # the deep model overran its budget; the fast model answered
    # sent straight to the fast model: the deep model's recent p95 is over the budget
    routed: bool = False
    degraded: str | None = None  # why the local rules answered instead of the model
    # tasks.PROMPT_VERSIONS of the prompt that produced the answer; None when no prompt was
    # sent (the local rules model)
    prompt_version: str | None = None
    endpoint: str | None = None  # the base URL that answered (None: no call was made)

    @property
    def stands_in(self) -> bool:
        """The fast model answered a deep request (cut at, or routed around, the latency
        budget): not the answer of the model the request was addressed to, which caches and
        memos key it by."""
        return self.fell_back or self.routed

    @property
    def requests(self) -> int:
        return sum(spend.requests for spend in self.spent)

    @property
    def input_tokens(self) -> int:
        return sum(spend.input_tokens for spend in self.spent)

    @property
    def output_tokens(self) -> int:
        return sum(spend.output_tokens for spend in self.spent)


def ms_since(started: float) -> float:
    """Milliseconds since `started`, a time.perf_counter()."""
    return (time.perf_counter() - started) * 1000.0


class LlmPermanentError(Exception):
    """The task cannot be answered (after retries, or never): degrade or dead-letter it."""

    def __init__(self, message: str, reason: str = "failed", spent: tuple[Spend, ...] = (),
                 latency_ms: float = 0.0):
        super().__init__(message)
        self.reason = reason  # short, for the `model` column of a degraded answer
        self.spent = spent  # every request spent on it, counted like the answered ones'
        self.latency_ms = latency_ms  # from the first attempt to giving up


class LatencyBudgetExceeded(Exception):
    """A deep-tier call overran `latency_budget_ms` and was cut; `spent` includes the cut."""

    def __init__(self, spent: tuple[Spend, ...]):
        super().__init__("deep model call over its latency budget")
        self.spent = spent


class LlmBackend(Protocol):
    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        """Answer `task` for `data` with the `tier` model; raise LlmPermanentError if it can't."""
        ...

    async def aclose(self) -> None:
        ...
