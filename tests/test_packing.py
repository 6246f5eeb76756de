"""Request packing: one call for many transactions, nothing lost or guessed."""
import asyncio

import pytest

from realtime_ai.llm import base, local_model, runner, server
from realtime_ai.llm.base import LlmConfig, LlmPermanentError, LlmResult, Spend
from realtime_ai.llm.client import make_backend
from realtime_ai.llm.packing import PackingBackend, split_packed

FEATURES = {"history_count": 20, "mean_amount": 30.0, "std_amount": 10.0, "amount_zscore": 0.2,
            "velocity_1h": 0, "amount_1h": 0.0, "seconds_since_last": 7200.0,
            "new_country": False, "new_merchant_category": False, "last_country": "DE"}


def risk_data(i, **features):
    return {"transaction": {"transaction_id": f"tx-{i}", "customer_id": "c", "amount": 30.0,
                            "currency": "EUR", "merchant": "m", "merchant_category": "groceries",
                            "country": "DE", "channel": "pos",
                            "timestamp": "2026-01-05T10:00:00Z"},
            "features": {**FEATURES, **features}}


def test_split_packed_keeps_only_valid_unique_known_ids():
    answer = {"results": [
        {"transaction_id": "a", "risk_score": 0.1, "reason": "ok"},
        {"transaction_id": "b", "risk_score": 7, "reason": "out of range"},
        {"transaction_id": "c", "risk_score": 0.2, "reason": "x"},
        {"transaction_id": "c", "risk_score": 0.3, "reason": "twice"},
        {"transaction_id": "zzz", "risk_score": 0.2, "reason": "not asked"},
    ]}
    assert split_packed(answer, ["a", "b", "c", "d"]) == {"a": {"risk_score": 0.1,
                                                                "reason": "ok"}}


class _DropsOneId:
    """A backend whose packed answers leave out tx-3 (a real model's mistake, on purpose)."""

    def __init__(self):
        self.calls = []

    async def complete(self, task, data, tier):
        self.calls.append(task)
        answer = local_model.answer(task, data)
        if task == base.TRANSACTION_RISK_PACKED:
            answer["results"] = [r for r in answer["results"] if r["transaction_id"] != "tx-3"]
        return LlmResult(answer=answer, model="m", latency_ms=1.0,
                         spent=(Spend("m", 1.0, input_tokens=100),))

    async def aclose(self):
        return None


def test_missing_ids_are_asked_alone():
    inner = _DropsOneId()
    packing = PackingBackend(inner, LlmConfig(fast_batch_size=5, batch_wait_ms=1000))

    async def run():
        return await asyncio.gather(*(packing.complete(base.TRANSACTION_RISK, risk_data(i),
                                                       base.FAST) for i in range(5)))

    results = runner.submit(run()).result(10)
    assert [r.answer["risk_score"] for r in results] == [0.02] * 5
    assert inner.calls.count(base.TRANSACTION_RISK_PACKED) == 1
    assert inner.calls.count(base.TRANSACTION_RISK) == 1  # only tx-3, alone
    assert results[0].input_tokens == 20  # the packed call's tokens shared out


@pytest.mark.integration
def test_packed_requests_through_the_server_match_single_requests(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    handle = server.start_in_thread(port=0, latency_ms=5)
    try:
        config = LlmConfig(backend="openai", base_url=handle.base_url, fast_batch_size=8,
                           batch_wait_ms=20)
        backend = make_backend(config)
        data = [risk_data(i, velocity_1h=i % 5, amount_zscore=float(i)) for i in range(40)]

        async def run():
            return await asyncio.gather(*(backend.complete(base.TRANSACTION_RISK, d, base.FAST)
                                          for d in data))

        packed = runner.submit(run()).result(30)
        assert handle.stats["requests"] == 5  # 40 transactions in 5 calls of 8
        assert [r.answer for r in packed] == [local_model.transaction_risk(d) for d in data]
        # other tasks are never packed
        runner.submit(backend.complete(base.DASHBOARD_INSIGHT, {
            "dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []},
            base.FAST)).result(10)
        assert handle.stats["requests"] == 6
        handle.settings.error_rate = 1.0
        failing = make_backend(LlmConfig(
            backend="openai", base_url=handle.base_url, fast_batch_size=8, max_retries=0,
            timeout_seconds=0.5, on_model_failure=base.DEAD_LETTER))
        with pytest.raises(LlmPermanentError):
            runner.submit(failing.complete(base.TRANSACTION_RISK, data[0], base.FAST)).result(10)
        runner.submit(failing.aclose()).result(5)
    finally:
        runner.submit(backend.aclose()).result(5)
        handle.stop()


class _Broken:
    """A backend with a bug: every call raises something that is not a model failure."""

    async def complete(self, task, data, tier):
        raise RuntimeError(f"bug in {task}")

    async def aclose(self):
        return None


def test_a_bug_under_packing_reaches_every_element_and_hangs_none():
    packing = PackingBackend(_Broken(), LlmConfig(fast_batch_size=3, batch_wait_ms=1000))

    async def run():
        return await asyncio.gather(*(packing.complete(base.TRANSACTION_RISK, risk_data(i),
                                                       base.FAST) for i in range(3)),
                                    return_exceptions=True)

    outcomes = runner.submit(run()).result(10)
    assert [str(o) for o in outcomes] == ["bug in transaction_risk_packed"] * 3
