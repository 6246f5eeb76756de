"""Latency routing: a deep model slow for a while is not waited for on every event."""
import asyncio
import math
import time

import pytest

from realtime_ai.llm import accounting, base, client, routing, runner, server, tasks
from realtime_ai.llm.base import LatencyBudgetExceeded, LlmConfig, LlmPermanentError, LlmResult
from realtime_ai.llm.client import make_backend

BUDGET_MS = 100
INSIGHT = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}


@pytest.fixture()
def slow_deep(monkeypatch):
    """The test server with a deep model ("big") ten budgets slow, and a backend for it."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    handle = server.start_in_thread(port=0, model_latency_ms={"big": 10 * BUDGET_MS})
    backend = make_backend(LlmConfig(backend="openai", base_url=handle.base_url,
                                     fast_model="small", deep_model="big",
                                     latency_budget_ms=BUDGET_MS))
    yield handle, backend
    runner.submit(backend.aclose()).result(10)
    handle.stop()


def _ask_deep(backend, count: int, first: int = 0) -> list[LlmResult]:
    """`count` distinct deep requests, one after the other (the cache answers none)."""
    return [runner.submit(backend.complete(base.DASHBOARD_INSIGHT,
                                           {**INSIGHT, "dashboard_id": f"d{i}"},
                                           base.DEEP)).result(30)
            for i in range(first, first + count)]


def test_slow_deep_model_is_skipped_after_warm_up(slow_deep):
    handle, backend = slow_deep
    started = time.monotonic()
    results = _ask_deep(backend, 60)
    elapsed = time.monotonic() - started
    # each call waiting out the budget would take 6 s
    assert elapsed < 0.5 * 60 * BUDGET_MS / 1000
    assert all(result.model == "small" for result in results)
    routed = [result.routed for result in results]
    assert not any(routed[:routing.MIN_CALLS]) and all(r.fell_back for r in
                                                      results[:routing.MIN_CALLS])
    # after the warm-up only the probes (one in PROBE_EVERY) still try the deep model
    assert routed[routing.MIN_CALLS:].count(False) <= math.ceil(
        (60 - routing.MIN_CALLS) / routing.PROBE_EVERY)


def test_recovered_deep_model_is_used_again(slow_deep):
    handle, backend = slow_deep
    _ask_deep(backend, routing.MIN_CALLS + 1)
    assert _ask_deep(backend, 1, first=100)[0].routed
    handle.settings.model_latency_ms = {}  # the deep model is fast again
    results = _ask_deep(backend, routing.PROBE_EVERY + 3, first=200)
    assert results[-1].model == "big" and not results[-1].routed
    assert sum(result.model == "big" for result in results) >= 3


class _CutDeep:
    """A backend whose deep calls are all cut at the budget; fast ones answer."""

    def __init__(self):
        self.deep_calls = 0

    async def complete(self, task, data, tier):
        if tier == base.DEEP:
            self.deep_calls += 1
            raise LatencyBudgetExceeded(())
        return LlmResult(answer={}, model="fast", latency_ms=1.0)


def test_probes_come_at_least_every_interval():
    now = [0.0]
    inner = _CutDeep()
    router = routing.LatencyRouter(inner, budget_seconds=0.1, probe_every=1000,
                                   probe_interval_seconds=5.0, clock=lambda: now[0])

    def ask() -> LlmResult:
        return asyncio.run(router.complete(base.DASHBOARD_INSIGHT, INSIGHT, base.DEEP))

    for _ in range(routing.MIN_CALLS):
        assert ask().fell_back
    assert inner.deep_calls == routing.MIN_CALLS and router.deep_too_slow()
    assert all(ask().routed for _ in range(50))
    now[0] = 5.0
    probe = ask()
    assert probe.fell_back and not probe.routed
    assert inner.deep_calls == routing.MIN_CALLS + 1 and ask().routed


def test_p95_of_the_last_calls():
    estimate = routing.LatencyEstimate(window=20, min_calls=10)
    for _ in range(9):
        estimate.add(0.05)
    assert estimate.p95() is None  # not enough calls to say
    estimate.add(math.inf)
    assert estimate.p95() == math.inf  # one slow in ten: the p95 is the slowest
    for _ in range(10):
        estimate.add(0.05)
    assert estimate.p95() == 0.05  # one slow in twenty is within the p95
    estimate.add(math.inf)
    assert estimate.p95() == math.inf


def test_summary_counts_requests_sent_straight_to_the_fast_model():
    lines = accounting.summary_lines({"llm_answers": 5, "llm_routed_to_fast": 3})
    assert "  3 deep requests sent straight to the fast model (the deep model's recent p95 " \
           "over --latency_budget_ms)" in lines


class _Models:
    """In place of OpenAiBackend under make_backend's real stack: the fast model "small" and
    the deep model "big"; a deep call is cut at the budget while `deep_slow`, a fast one fails
    while `fast_down`."""

    def __init__(self):
        self.deep_slow = True
        self.fast_down = False
        self.calls = {"small": 0, "big": 0}

    async def complete(self, task, data, tier):
        model = "big" if tier == base.DEEP else "small"
        self.calls[model] += 1
        if model == "big" and self.deep_slow:
            raise LatencyBudgetExceeded(())
        if model == "small" and self.fast_down:
            raise LlmPermanentError("fast model down", reason="HTTP 503")
        return LlmResult(answer={"insight": f"{model} call {self.calls[model]}",
                                 "priority": "low"}, model=model, latency_ms=1.0,
                         prompt_version=tasks.PROMPT_VERSIONS[task])

    async def aclose(self):
        pass


@pytest.fixture()
def models(monkeypatch):
    stand_in = _Models()
    monkeypatch.setattr(client, "OpenAiBackend", lambda config: stand_in)
    return stand_in


def _stack(memo_dir=None):
    """A worker's backend as make_backend builds it (response cache, and memo if a folder)."""
    return make_backend(LlmConfig(backend="openai", fast_model="small", deep_model="big",
                                  latency_budget_ms=BUDGET_MS,
                                  memo=str(memo_dir) if memo_dir else None))


def _window(i):
    return {**INSIGHT, "dashboard_id": f"w{i}"}


def _deep(backend, i) -> LlmResult:
    return runner.submit(backend.complete(base.DASHBOARD_INSIGHT, _window(i), base.DEEP)
                         ).result(10)


def _after_recovery(models, backend, memo_dir):
    """The deep model fast again: the backend that asks next (the same worker, whose router
    has seen a probe answered within budget; or, with a memo, a later run)."""
    models.deep_slow = False
    if memo_dir is not None:
        return _stack(memo_dir)
    for i in range(1000, 1000 + routing.PROBE_EVERY + 1):  # until a probe brings it back
        if _deep(backend, i).model == "big":
            return backend
    raise AssertionError("no probe reached the recovered deep model")


def _asked_again_gets_the_deep_answer(models, backend, memo_dir):
    again = _deep(_after_recovery(models, backend, memo_dir), 0)
    assert again.model == "big" and not (again.fell_back or again.routed or again.cached)
    # the deep model's own answer is kept, and replayed as it was: same model and prompt
    calls = dict(models.calls)
    replayed = _deep(backend if memo_dir is None else _stack(memo_dir), 0)
    assert replayed.cached and models.calls == calls
    assert (replayed.answer, replayed.model, replayed.prompt_version) == (
        again.answer, again.model, again.prompt_version)


@pytest.mark.parametrize("memo", [False, True], ids=["response cache", "memo"])
def test_a_fast_answer_cut_in_for_the_deep_model_is_not_kept_as_its_answer(models, tmp_path,
                                                                            memo):
    memo_dir = tmp_path if memo else None
    backend = _stack(memo_dir)
    stand_in = _deep(backend, 0)
    assert stand_in.fell_back and stand_in.model == "small"
    _asked_again_gets_the_deep_answer(models, backend, memo_dir)


@pytest.mark.parametrize("memo", [False, True], ids=["response cache", "memo"])
def test_a_fast_answer_routed_around_the_deep_model_is_not_kept_as_its_answer(models, tmp_path,
                                                                               memo):
    memo_dir = tmp_path if memo else None
    backend = _stack(memo_dir)
    for i in range(1, routing.MIN_CALLS + 1):
        _deep(backend, i)
    stand_in = _deep(backend, 0)
    assert stand_in.routed and stand_in.model == "small"
    _asked_again_gets_the_deep_answer(models, backend, memo_dir)


def test_a_degraded_answer_is_not_remembered(models, tmp_path):
    models.fast_down = True
    degraded = _deep(_stack(tmp_path), 0)
    assert degraded.degraded == "HTTP 503" and degraded.model == base.degraded_label("HTTP 503")
    models.fast_down = models.deep_slow = False
    again = _deep(_stack(tmp_path), 0)
    assert again.model == "big" and not again.remembered
