"""The contract between the pipeline and any model backend. Pure: no Beam import.

A backend answers one *task* (which fixes the instruction and the JSON schema of the answer)
for one *data* dict (the event and its context, sent as delimited data, never as
instructions), using one *tier* of model (fast or deep). It returns a validated answer or
raises `LlmPermanentError`, which the pipeline turns into a dead-letter row.
"""
from __future__ import annotations

import dataclasses
import os
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
    concurrency: int = 64
    fast_batch_size: int = 1  # transactions packed into one fast-tier request
    batch_wait_ms: float = 50.0  # longest a request waits for others to pack or gather with
    requests_per_minute: float | None = None  # client-side budgets per worker; None: none
    tokens_per_minute: float | None = None
    cache_ttl_seconds: float = 60.0  # identical requests within this are answered once
    cache_size: int = 100_000  # answers kept per worker
    cache_url: str | None = None  # redis://host:port/db: a cache shared by all workers
    latency_budget_ms: float | None = None  # a deep call overrunning it goes to the fast tier


def resolve_backend(backend: str | None, base_url: str | None) -> str:
    """The explicit backend, else openai when an endpoint or key is configured, else local."""
    if backend:
        return backend
    return "openai" if base_url or os.environ.get("OPENAI_API_KEY") else "local"


@dataclasses.dataclass(frozen=True)
class LlmResult:
    """A schema-valid answer and what it cost."""

    answer: Mapping[str, Any]
    model: str
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    attempts: int = 1
    cached: bool = False  # served from the response cache: no call, no cost
    fell_back: bool = False  # the deep model overran its budget; the fast model answered


class LlmPermanentError(Exception):
    """The task cannot be answered (after retries, or never): dead-letter the event."""

    def __init__(self, message: str, attempts: int = 1):
        super().__init__(message)
        self.attempts = attempts  # requests spent on it, counted with the answered ones'


class LlmBackend(Protocol):
    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        """Answer `task` for `data` with the `tier` model; raise LlmPermanentError if it can't."""
        ...

    async def aclose(self) -> None:
        ...
