"""Latency routing (--latency_budget_ms): the deep model's answers within a budget, or the fast
model's. No Beam.

A deep call that overruns the budget is cut (by OpenAiBackend, so it is not paid further) and
the fast model answers instead. That alone makes every event wait out the whole budget while
the deep model is slow, so the router also keeps a moving estimate of the deep model's
latency, the p95 of its last LATENCY_WINDOW calls (a cut call counts as over the budget:
longer than it, by how much unknown). While that p95 is over the budget, deep requests go
straight to the fast model (`LlmResult.routed`), except a probe now and then: one request in
PROBE_EVERY, or one every PROBE_INTERVAL_SECONDS, whichever comes first, one at a time. A
probe answered within the budget means the deep model has recovered: the estimate starts
afresh and deep requests go to it again.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from realtime_ai.llm import base
from realtime_ai.llm.base import LatencyBudgetExceeded, LlmPermanentError, LlmResult, ms_since

LATENCY_WINDOW = 20  # deep calls the p95 is taken over
MIN_CALLS = 10  # calls before the estimate decides anything
PROBE_EVERY = 20
PROBE_INTERVAL_SECONDS = 5.0
P95 = 0.95


class LatencyEstimate:
    """The p95 latency of the last `window` calls (nearest rank), once there are `min_calls`."""

    def __init__(self, window: int = LATENCY_WINDOW, min_calls: int = MIN_CALLS):
        self._recent: collections.deque[float] = collections.deque(maxlen=window)
        self._min_calls = min_calls

    def add(self, seconds: float) -> None:
        self._recent.append(seconds)

    def restart(self) -> None:
        self._recent.clear()

    def p95(self) -> float | None:
        if len(self._recent) < self._min_calls:
            return None
        ordered = sorted(self._recent)
        return ordered[math.ceil(P95 * len(ordered)) - 1]


class LatencyRouter:
    def __init__(self, inner: base.LlmBackend, budget_seconds: float,
                 probe_every: int = PROBE_EVERY,
                 probe_interval_seconds: float = PROBE_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._inner = inner
        self._budget = budget_seconds
        self._probe_every = probe_every
        self._probe_interval = probe_interval_seconds
        self._clock = clock
        self.deep_latency = LatencyEstimate()
        self._routed_since_probe = 0
        self._last_probe_at = clock()
        self._probing = False  # a probe is in flight

    def deep_too_slow(self) -> bool:
        p95 = self.deep_latency.p95()
        return p95 is not None and p95 > self._budget

    def _takes_probe(self) -> bool:
        """Whether this deep request, while the deep model is too slow, is the next probe."""
        if self._probing:
            return False
        self._routed_since_probe += 1
        if (self._routed_since_probe < self._probe_every
                and self._clock() - self._last_probe_at < self._probe_interval):
            return False
        self._probing = True
        self._routed_since_probe = 0
        self._last_probe_at = self._clock()
        return True

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        if tier != base.DEEP:
            return await self._inner.complete(task, data, tier)
        probe = False
        if self.deep_too_slow():
            probe = self._takes_probe()
            if not probe:
                result = await self._inner.complete(task, data, base.FAST)
                return dataclasses.replace(result, routed=True)
        try:
            return await self._deep(task, data, probe)
        finally:
            if probe:
                self._probing = False

    async def _deep(self, task: str, data: Mapping[str, Any], probe: bool) -> LlmResult:
        started = time.perf_counter()
        try:
            result = await self._inner.complete(task, data, base.DEEP)
        except LatencyBudgetExceeded as cut:
            self.deep_latency.add(math.inf)
            return await self._fall_back(task, data, cut, started)
        elapsed = time.perf_counter() - started
        if probe and elapsed <= self._budget:
            self.deep_latency.restart()  # recovered: what it did while slow is past
        self.deep_latency.add(elapsed)
        return result

    async def _fall_back(self, task: str, data: Mapping[str, Any], cut: LatencyBudgetExceeded,
                         started: float) -> LlmResult:
        """The fast model's answer to a deep call cut at the budget; what the cut cost is
        kept."""
        try:
            result = await self._inner.complete(task, data, base.FAST)
        except LlmPermanentError as error:
            error.spent = cut.spent + error.spent
            error.latency_ms = ms_since(started)
            raise
        return dataclasses.replace(result, fell_back=True, latency_ms=ms_since(started),
                                   spent=cut.spent + result.spent)

    async def aclose(self) -> None:
        await self._inner.aclose()
