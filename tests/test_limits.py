"""Rate budgets and the circuit breaker, alone and against a failing server."""
import asyncio
import time

import pytest

from realtime_ai.llm import base, runner, server
from realtime_ai.llm.base import LlmConfig, LlmPermanentError
from realtime_ai.llm.client import OpenAiBackend
from realtime_ai.llm.limits import PACE_SHARE, CircuitBreaker, CircuitOpen, RateLimiter


def test_requests_are_paced_at_the_budget():
    limiter = RateLimiter(requests_per_minute=1200, tokens_per_minute=None)  # 20 per second

    async def run():
        started = time.monotonic()
        for _ in range(21):
            await limiter.acquire(tokens=100)
        return time.monotonic() - started

    elapsed = runner.submit(run()).result(10)
    assert elapsed == pytest.approx(1.0 / PACE_SHARE, rel=0.1)


def test_token_budget_paces_large_requests_and_429_slows_down():
    limiter = RateLimiter(requests_per_minute=None, tokens_per_minute=60_000)  # 1000/s

    async def run():
        started = time.monotonic()
        for _ in range(5):
            await limiter.acquire(tokens=100)  # 0.1 s of budget each
        return time.monotonic() - started

    assert runner.submit(run()).result(10) == pytest.approx(0.4 / PACE_SHARE, rel=0.15)
    limiter.rate_limited(retry_after=None)
    assert limiter.pace < 1.0
    for _ in range(100):
        limiter.succeeded()
    assert limiter.pace == 1.0


def test_circuit_opens_fails_fast_and_probes():
    breaker = CircuitBreaker(failure_limit=3, cooldown_seconds=0.2)
    for _ in range(3):
        breaker.before_call()
        breaker.failed()
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    time.sleep(0.25)
    breaker.before_call()  # the one probe
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # others wait while it runs
    breaker.failed()  # probe failed: open for twice as long
    time.sleep(0.25)
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    time.sleep(0.2)
    breaker.before_call()
    breaker.succeeded()
    breaker.before_call()
    assert not breaker.is_open and breaker.opened == 1


@pytest.mark.integration
def test_dead_endpoint_is_not_hammered(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    handle = server.start_in_thread(port=0)
    handle.settings.error_rate = 1.0
    handle.settings.faults = ("server_error",)
    backend = OpenAiBackend(LlmConfig(backend="openai", base_url=handle.base_url,
                                      max_retries=3, timeout_seconds=0.3))
    data = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}

    async def run():
        return await asyncio.gather(
            *(backend.complete(base.DASHBOARD_INSIGHT, data, base.FAST) for _ in range(100)),
            return_exceptions=True)

    try:
        outcomes = runner.submit(run()).result(60)
    finally:
        handle.stop()
    assert all(isinstance(o, LlmPermanentError) for o in outcomes)
    # 100 events x 4 attempts would be 400 requests; the open circuit stops most of them
    assert handle.stats["requests"] < 200
    assert any("circuit open" in str(o) for o in outcomes)
