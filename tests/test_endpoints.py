"""Several endpoints: least-loaded healthy one per request, one killed mid-run loses nothing."""
import asyncio
import time

import pytest

from realtime_ai.llm import accounting, base, runner, server
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.client import OpenAiBackend
from realtime_ai.llm.endpoints import POOLED_FAILURE_LIMIT, make_pools

pytestmark = pytest.mark.integration
FEATURES = {"history_count": 20, "mean_amount": 30.0, "std_amount": 10.0, "amount_zscore": 0.2,
            "velocity_1h": 0, "amount_1h": 0.0, "seconds_since_last": 7200.0,
            "new_country": False, "new_merchant_category": False, "last_country": "DE"}


def _data(i):
    return {"transaction": {"transaction_id": f"tx-{i}", "amount": 30.0, "currency": "EUR",
                            "merchant": "m", "merchant_category": "groceries", "country": "DE",
                            "channel": "pos", "timestamp": "2026-01-05T10:00:00Z"},
            "features": FEATURES}


def _start(backend, count):
    async def ask_all():
        try:
            return await asyncio.gather(*(
                backend.complete(base.TRANSACTION_RISK, _data(i), base.FAST)
                for i in range(count)))
        finally:
            await backend.aclose()

    return runner.submit(ask_all())


def _backend(monkeypatch, *handles, **config):
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    return OpenAiBackend(LlmConfig(
        backend="openai", base_url=",".join(h.base_url for h in handles), **config))


def test_one_endpoint_killed_mid_run_the_other_carries_the_load_and_nothing_is_lost(
        monkeypatch):
    first = server.start_in_thread(port=0, latency_ms=20)
    second = server.start_in_thread(port=0, latency_ms=20)
    try:
        backend = _backend(monkeypatch, first, second, concurrency=8, max_retries=4)
        running = _start(backend, 400)
        deadline = time.monotonic() + 30
        while first.stats["status_200"] < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.stop()  # mid-run: requests in flight on it are cut, new ones refused
        results = running.result(60)  # an LlmPermanentError here would be a dead letter
    finally:
        second.stop()
    assert len(results) == 400
    by_url = {e.base_url: e for e in backend.endpoints()}
    killed, survivor = by_url[first.base_url], by_url[second.base_url]
    assert killed.answers >= 60 and survivor.answers >= 150
    assert killed.answers + survivor.answers == 400
    assert killed.failures >= POOLED_FAILURE_LIMIT and killed.breaker.opened >= 1
    assert {r.endpoint for r in results} == {first.base_url, second.base_url}


def test_requests_go_to_the_least_loaded_endpoint(monkeypatch):
    quick = server.start_in_thread(port=0, latency_ms=5)
    slow = server.start_in_thread(port=0, latency_ms=250)
    try:
        backend = _backend(monkeypatch, slow, quick, concurrency=8)
        results = _start(backend, 200).result(60)
    finally:
        quick.stop()
        slow.stop()
    served = {url: sum(r.endpoint == url for r in results) for url in (quick.base_url,
                                                                        slow.base_url)}
    assert served[quick.base_url] >= 0.75 * len(results) and served[slow.base_url] >= 1
    summary = accounting.summary_lines(
        {"llm_answers": 200, **{f"llm_answers_by_endpoint:{url}": n for url, n in served.items()}})
    assert f"{quick.base_url} {served[quick.base_url]} (" in summary[1]


def test_tiers_naming_the_same_endpoint_share_it():
    pools = make_pools({base.FAST: ("http://a/v1", "http://b/v1"), base.DEEP: ("http://b/v1",)})
    assert pools[base.DEEP].endpoints[0] is pools[base.FAST].endpoints[1]
    config = LlmConfig(base_url="http://a/v1, http://b/v1", deep_base_url="http://c/v1")
    assert config.endpoint_urls(base.FAST) == ("http://a/v1", "http://b/v1")
    assert config.endpoint_urls(base.DEEP) == ("http://c/v1",)
    assert LlmConfig().endpoint_urls(base.FAST) == (None,)
