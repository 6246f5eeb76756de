"""Paying once per identical request: the LRU, in-flight sharing, Redis, retried bundles."""
import asyncio
import time

import pytest
from apache_beam.transforms.window import GlobalWindows

from realtime_ai.core.replay import Replayable
from realtime_ai.llm import base, runner, tasks
from realtime_ai.llm.base import LlmConfig, LlmResult
from realtime_ai.llm.cache import LruTtlCache, request_key
from realtime_ai.llm.client import make_backend
from realtime_ai.transforms.ask_model import _AskModelDoFn
from tests.conftest import redis_on_own_port

INSIGHT = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}
RESULT = LlmResult(answer={"x": 1}, model="m", latency_ms=1.0)


def _replayable(element):
    return Replayable(repr(element), None)


def test_lru_ttl_evicts_old_and_expired_entries():
    cache = LruTtlCache(max_entries=2, ttl_seconds=0.2)
    cache.put("a", RESULT)
    cache.put("b", RESULT)
    assert cache.get("a") is RESULT  # a is now the most recent
    cache.put("c", RESULT)
    assert cache.get("b") is None and cache.get("a") is RESULT
    time.sleep(0.25)
    assert cache.get("a") is None


def test_request_key_normalises_dict_order():
    task = base.DASHBOARD_INSIGHT
    assert request_key(task, "m", {"a": 1, "b": 2}) == request_key(task, "m", {"b": 2, "a": 1})
    assert request_key(task, "m", {"a": 1}) != request_key(task, "other", {"a": 1})


def test_request_key_changes_with_the_prompt_version(monkeypatch):
    before = request_key(base.DASHBOARD_INSIGHT, "m", {"a": 1})
    monkeypatch.setitem(tasks.PROMPT_VERSIONS, base.DASHBOARD_INSIGHT, "0ther000")
    assert request_key(base.DASHBOARD_INSIGHT, "m", {"a": 1}) != before


def _data(i):
    return {**INSIGHT, "dashboard_id": f"d{i}"}


@pytest.mark.integration
def test_identical_requests_are_paid_once_even_when_concurrent(llm_server):
    llm_server.settings.latency_ms = 50  # the identical requests are in flight together
    backend = make_backend(LlmConfig(backend="openai", base_url=llm_server.base_url))

    async def run():
        first = await asyncio.gather(*(backend.complete(base.DASHBOARD_INSIGHT, _data(i % 3),
                                                        base.FAST) for i in range(30)))
        again = await backend.complete(base.DASHBOARD_INSIGHT, _data(0), base.FAST)
        return first, again

    first, again = runner.submit(run()).result(30)
    assert llm_server.stats["requests"] == 3
    assert again.answer == first[0].answer


@pytest.mark.integration
def test_failures_and_degraded_answers_are_not_cached(llm_server):
    llm_server.settings.error_rate = 1.0
    llm_server.settings.faults = ("server_error",)
    backend = make_backend(LlmConfig(backend="openai", base_url=llm_server.base_url,
                                     max_retries=0))
    degraded = runner.submit(backend.complete(base.DASHBOARD_INSIGHT, INSIGHT, base.FAST)
                             ).result(10)
    assert degraded.degraded == "HTTP 500 InternalServerError"
    llm_server.settings.error_rate = 0.0
    result = runner.submit(backend.complete(base.DASHBOARD_INSIGHT, INSIGHT, base.FAST)).result(10)
    assert result.answer["insight"] and not result.degraded and not result.cached
    assert llm_server.stats["requests"] == 2


@pytest.mark.integration
def test_a_retried_bundle_does_not_pay_twice(llm_server):
    """The DoFn runs the same bundle twice, as Beam does after a failure: calls per event 1."""
    config = LlmConfig(backend="openai", base_url=llm_server.base_url, concurrency=8)
    events = [_data(i) for i in range(40)]
    fn = _AskModelDoFn(config, base.DASHBOARD_INSIGHT, base.FAST, lambda e: e, asks=None,
                       to_replayable=_replayable, keep_failed=False)
    fn.setup()
    for _attempt in range(2):
        outputs = []
        for event in events:
            outputs += list(fn.process(event, windowed=GlobalWindows.windowed_value(event)))
        outputs += list(fn.finish_bundle())
        assert len(outputs) == len(events)
    assert llm_server.stats["requests"] / len(events) <= 1.01


@pytest.fixture(scope="module")
def redis_url():
    yield from redis_on_own_port("6396")


@pytest.mark.integration
def test_redis_shares_answers_between_workers_and_expires_them(llm_server, redis_url):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    # a TTL long enough that a busy machine cannot expire it between the two workers' calls
    config = LlmConfig(backend="openai", base_url=llm_server.base_url, cache_url=redis_url,
                       cache_ttl_seconds=3)
    worker_a, worker_b = make_backend(config), make_backend(config)
    first = runner.submit(worker_a.complete(base.DASHBOARD_INSIGHT, INSIGHT, base.FAST)).result(10)
    second = runner.submit(worker_b.complete(base.DASHBOARD_INSIGHT, INSIGHT, base.FAST)).result(10)
    assert second.answer == first.answer and second.cached and not first.cached
    assert (second.model, second.prompt_version) == (first.model, first.prompt_version)
    assert llm_server.stats["requests"] == 1
    time.sleep(3.1)  # past the TTL in Redis (whole seconds) and locally
    runner.submit(worker_b.complete(base.DASHBOARD_INSIGHT, INSIGHT, base.FAST)).result(10)
    assert llm_server.stats["requests"] == 2


@pytest.mark.integration
def test_redis_down_costs_money_not_events(llm_server):
    config = LlmConfig(backend="openai", base_url=llm_server.base_url,
                       cache_url="redis://127.0.0.1:1/0")
    result = runner.submit(make_backend(config).complete(
        base.DASHBOARD_INSIGHT, INSIGHT, base.FAST)).result(10)
    assert result.answer["insight"]
