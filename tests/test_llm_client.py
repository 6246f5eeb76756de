"""The real `openai` client against our OpenAI-compatible server on loopback."""
import asyncio
import gc
import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from realtime_ai.llm import base, runner, server, tasks
from realtime_ai.llm.base import LlmConfig, LlmPermanentError
from realtime_ai.llm.client import OpenAiBackend, backoff_seconds

pytestmark = pytest.mark.integration
KEY = "sk-test-secret-do-not-log"
DATA = {"transaction": {"transaction_id": "tx-1", "customer_id": "c", "amount": 2.0,
                        "currency": "EUR", "merchant": "m", "merchant_category": "digital_goods",
                        "country": "DE", "channel": "online", "timestamp": "2026-01-05T10:00:00Z"},
        "features": {"history_count": 20, "mean_amount": 30.0, "std_amount": 10.0,
                     "amount_zscore": -2.0, "velocity_1h": 4, "amount_1h": 8.0,
                     "seconds_since_last": 60.0, "new_country": False,
                     "new_merchant_category": False, "last_country": "DE"}}


def _another_transaction(amount: float) -> dict:
    """DATA for another transaction (an answer asked for twice comes from the cache)."""
    return {**DATA, "transaction": {**DATA["transaction"], "transaction_id": f"tx-{amount}",
                                    "amount": float(amount)}}


@pytest.fixture()
def llm_server():
    handle = server.start_in_thread(port=0)
    yield handle
    handle.stop()


def _ask(handle, monkeypatch, **config):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    backend = OpenAiBackend(LlmConfig(backend="openai", base_url=handle.base_url,
                                      fast_model="small", **config))
    try:
        return runner.submit(backend.complete(base.TRANSACTION_RISK, DATA, base.FAST)).result(30)
    finally:
        runner.submit(backend.aclose()).result(5)


def test_answer_with_usage(llm_server, monkeypatch):
    result = _ask(llm_server, monkeypatch)
    assert result.answer["risk_score"] > 0.8
    assert result.model == "small" and result.requests == 1
    assert result.input_tokens > 50 and result.output_tokens > 5
    assert llm_server.stats["model:small"] == 1


def test_server_rate_limit_answers_429(llm_server, monkeypatch):
    llm_server.settings.rate_limit_rpm = 1
    _ask(llm_server, monkeypatch)  # takes the minute's only slot
    with pytest.raises(LlmPermanentError, match="HTTP 429"):
        _ask(llm_server, monkeypatch, max_retries=0)
    assert llm_server.stats["status_429"] == 1


def test_malformed_and_failing_answers_are_retried_then_dead_lettered(llm_server, monkeypatch):
    llm_server.settings.error_rate = 1.0
    with pytest.raises(LlmPermanentError) as failure:
        _ask(llm_server, monkeypatch, max_retries=2, timeout_seconds=0.5)
    assert "after 3 attempt(s)" in str(failure.value) and len(failure.value.spent) == 3
    assert KEY not in str(failure.value)
    assert llm_server.stats["requests"] == 3
    llm_server.settings.error_rate = 0.0
    assert _ask(llm_server, monkeypatch).requests == 1


def test_hung_request_times_out(llm_server, monkeypatch):
    llm_server.settings.latency_ms = 3000
    started = time.monotonic()
    with pytest.raises(LlmPermanentError, match="timed out"):
        _ask(llm_server, monkeypatch, max_retries=0, timeout_seconds=0.3)
    assert time.monotonic() - started < 2


def test_requests_in_flight_stay_within_the_concurrency(llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    llm_server.settings.latency_ms = 50
    backend = OpenAiBackend(LlmConfig(backend="openai", base_url=llm_server.base_url,
                                      concurrency=3))

    async def ask_many():
        try:
            return await asyncio.gather(*(
                backend.complete(base.TRANSACTION_RISK, DATA, base.FAST) for _ in range(12)))
        finally:
            await backend.aclose()

    assert len(runner.submit(ask_many()).result(30)) == 12
    assert llm_server.stats["requests"] == 12 and llm_server.stats["max_in_flight"] == 3


def test_backoff_honours_retry_after_and_is_capped():
    import random
    rng = random.Random(1)
    assert backoff_seconds(0, 5.0, rng) == 5.0
    assert all(0 <= backoff_seconds(30, None, rng) <= 20.0 for _ in range(100))


def test_in_flight_bounds_concurrency_and_drains_everything():
    running = {"now": 0, "max": 0}

    async def job(i):
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        await asyncio.sleep(0.01)
        running["now"] -= 1
        if i == 3:
            raise LlmPermanentError("three")
        return i * 10

    in_flight = runner.InFlight(threading.Semaphore(4))
    for i in range(20):
        in_flight.add(i, job(i))
    outcomes = dict(in_flight.drain_completed() + in_flight.drain_all())
    assert running["max"] <= 4
    assert len(outcomes) == 20 and outcomes[5] == 50
    assert isinstance(outcomes[3], LlmPermanentError)


def test_deep_call_over_budget_is_answered_by_the_fast_model(monkeypatch):
    from realtime_ai.llm.client import make_backend

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    handle = server.start_in_thread(port=0, latency_ms=5, model_latency_ms={"big": 3000})
    try:
        backend = make_backend(LlmConfig(backend="openai", base_url=handle.base_url,
                                         fast_model="small", deep_model="big",
                                         latency_budget_ms=300))
        started = time.monotonic()
        result = runner.submit(backend.complete(base.DASHBOARD_INSIGHT, {
            "dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []},
            base.DEEP)).result(10)
        elapsed = time.monotonic() - started
    finally:
        handle.stop()
    assert result.fell_back and result.model == "small"
    assert 0.3 <= elapsed < 1.5 and result.latency_ms >= 300
    assert handle.stats["model:big"] == 1 and handle.stats["model:small"] == 1


def test_concurrency_limit_holds_across_dofn_instances_of_a_worker(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    handle = server.start_in_thread(port=0, latency_ms=50)
    try:
        config = LlmConfig(backend="openai", base_url=handle.base_url, fast_model="small",
                           concurrency=3)
        assert runner.shared_slots(config, base.FAST) is runner.shared_slots(config, base.FAST)
        backend = runner.shared_backend(config)
        first, second = (runner.InFlight(runner.shared_slots(config, base.FAST)) for _ in range(2))

        def feed(in_flight, first_amount):
            for amount in range(first_amount, first_amount + 15):
                in_flight.add(None, backend.complete(base.TRANSACTION_RISK,
                                                     _another_transaction(amount), base.FAST))

        threads = [threading.Thread(target=feed, args=(in_flight, 100 * n))
                   for n, in_flight in enumerate((first, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        answers = first.drain_all() + second.drain_all()
    finally:
        handle.stop()
    assert len(answers) == 30 and all(not isinstance(a, Exception) for _, a in answers)
    assert handle.stats["max_in_flight"] == 3


def _quiet_window(i: int) -> dict:
    """A window's insight request, a different one for each i (the cache answers repeats)."""
    return {"dashboard_id": f"d{i}", "window_start": "a", "window_end": "b", "metrics": []}


def test_a_slow_deep_model_never_holds_the_fast_models_request_slots(monkeypatch):
    """Every request slot taken by deep calls that take seconds: the fast model's calls are
    still answered at once (before, they waited for the deep answers: one limit for both)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    handle = server.start_in_thread(port=0, model_latency_ms={"big": 3000.0, "small": 300.0})
    config = LlmConfig(backend="openai", base_url=handle.base_url, fast_model="small",
                       deep_model="big", concurrency=2)
    backend = runner.shared_backend(config)
    deep, fast = (runner.InFlight(runner.shared_slots(config, tier))
                  for tier in (base.DEEP, base.FAST))
    try:
        for i in range(4):  # two in flight, two waiting for a request slot
            deep.add(i, backend.complete(base.DASHBOARD_INSIGHT, _quiet_window(i), base.DEEP))
        started = time.monotonic()
        for i in range(4):
            fast.add(i, backend.complete(base.TRANSACTION_RISK, _another_transaction(i),
                                         base.FAST))
        fast_answers = fast.drain_all()
        fast_seconds = time.monotonic() - started
        deep_answers = deep.drain_all()
    finally:
        handle.stop()
    assert [a.model for _, a in fast_answers] == ["small"] * 4
    assert fast_seconds < 1.5  # two rounds of 0.3 s; a deep answer takes 3 s
    assert [a.model for _, a in deep_answers] == ["big"] * 4
    assert handle.stats["max_in_flight"] == 4  # two a model, each over its own connections


def test_tiers_asking_the_same_model_at_the_same_endpoint_share_its_limit(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    handle = server.start_in_thread(port=0, latency_ms=200)
    config = LlmConfig(backend="openai", base_url=handle.base_url, fast_model="one",
                       deep_model="one", concurrency=2)
    backend = runner.shared_backend(config)

    async def both_tiers():
        return await asyncio.gather(*(
            backend.complete(base.DASHBOARD_INSIGHT, _quiet_window(i), tier)
            for i, tier in enumerate([base.FAST, base.DEEP] * 3)))

    try:
        answers = runner.submit(both_tiers()).result(10)
    finally:
        handle.stop()
    assert len(answers) == 6 and handle.stats["requests"] == 6
    assert handle.stats["max_in_flight"] == 2


def test_a_freed_request_slot_is_refilled_on_the_event_loop(monkeypatch):
    """The bundle thread hands over the next requests before slots free up, so an answer's
    slot is taken at once by a waiting request, not when that thread comes back."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    handle = server.start_in_thread(port=0, latency_ms=1000)
    try:
        config = LlmConfig(backend="openai", base_url=handle.base_url, fast_model="small",
                           concurrency=2)
        backend = runner.shared_backend(config)
        in_flight = runner.InFlight(runner.shared_slots(config, base.FAST))
        for i in range(4):
            in_flight.add(i, backend.complete(base.TRANSACTION_RISK, _another_transaction(i),
                                              base.FAST))
        answered_while_adding = in_flight.drain_completed()
        answers = in_flight.drain_all()
    finally:
        handle.stop()
    assert answered_while_adding == []  # no add waited for an answer
    assert len(answers) == 4 and handle.stats["max_in_flight"] == 2


def test_long_lived_objects_are_frozen_at_most_once_per_interval(monkeypatch):
    monkeypatch.setattr(runner, "_frozen_at", None)
    runner.freeze_long_lived_objects()
    frozen = gc.get_freeze_count()
    kept = [[] for _ in range(1000)]
    runner.freeze_long_lived_objects()  # too soon: nothing new frozen
    assert frozen > 0 and gc.get_freeze_count() == frozen
    monkeypatch.setattr(runner, "_frozen_at",
                        time.monotonic() - runner.FREEZE_INTERVAL_SECONDS)
    runner.freeze_long_lived_objects()
    assert gc.get_freeze_count() >= frozen + len(kept)


def test_packing_lets_each_request_slot_carry_a_batch_of_elements():
    slots = runner.shared_slots(LlmConfig(backend="local", concurrency=3, fast_batch_size=4),
                                base.FAST)
    held = runner.REQUESTS_HELD_PER_SLOT * 3 * 4
    taken = [slots.acquire(blocking=False) for _ in range(held + 1)]
    for _ in range(sum(taken)):
        slots.release()
    assert taken == [True] * held + [False]


def _post(handle, body):
    request = urllib.request.Request(handle.base_url + "/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_rejects_what_strict_providers_reject(llm_server):
    request = {"model": "small", "messages": tasks.build_messages(base.TRANSACTION_RISK, DATA),
               "max_tokens": 100, "response_format": tasks.response_format(base.TRANSACTION_RISK)}
    with_limits = {"type": "json_schema", "json_schema": {
        "name": base.TRANSACTION_RISK, "strict": True,
        "schema": tasks.SCHEMAS[base.TRANSACTION_RISK]}}
    status, body = _post(llm_server, {**request, "response_format": with_limits})
    assert status == 400
    assert body["error"]["message"] == (
        "Invalid schema for response_format 'transaction_risk': In context=('properties', "
        "'risk_score'), 'minimum' is not permitted.")
    status, body = _post(llm_server, {**request, "max_tokens": 100_000})
    assert status == 400 and "max_tokens is too large" in body["error"]["message"]
    status, body = _post(llm_server, {**request, "max_tokens": 5})
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
    assert _post(llm_server, request)[0] == 200


def test_every_call_sends_max_tokens_and_a_cut_answer_says_so(llm_server, monkeypatch):
    from realtime_ai.llm.client import make_backend

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    backend = make_backend(LlmConfig(backend="openai", base_url=llm_server.base_url,
                                     fast_batch_size=2, batch_wait_ms=200))
    other = {**DATA, "transaction": {**DATA["transaction"], "transaction_id": "tx-2"}}
    insight = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}

    async def ask_all():
        try:
            return await asyncio.gather(
                backend.complete(base.TRANSACTION_RISK, DATA, base.FAST),
                backend.complete(base.TRANSACTION_RISK, other, base.FAST),
                backend.complete(base.DASHBOARD_INSIGHT, insight, base.DEEP))
        finally:
            await backend.aclose()

    assert len(runner.submit(ask_all()).result(30)) == 3
    assert llm_server.stats["requests"] == 2 and llm_server.stats["status_200"] == 2
    assert llm_server.stats["without_max_tokens"] == 0
    monkeypatch.setattr(tasks, "ANSWER_CHARS_PER_TOKEN", 400)  # a budget too small
    monkeypatch.setattr(tasks, "ANSWER_TOKEN_SLACK", 0)
    with pytest.raises(LlmPermanentError, match="cut at max_tokens"):
        _ask(llm_server, monkeypatch, max_retries=0)
