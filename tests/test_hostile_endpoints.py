"""Endpoints that misbehave: each class of misbehaviour is a mode of our test server, and
none may crash, hang or mislabel a request."""
import asyncio
import functools
import socket
import time

import pytest

from realtime_ai.llm import base, endpoints, runner, server, tasks
from realtime_ai.llm.base import LlmConfig, LlmPermanentError
from realtime_ai.llm.client import OpenAiBackend, make_backend
from realtime_ai.llm.limits import CircuitBreaker
from tests.test_llm_client import DATA

pytestmark = pytest.mark.integration


def _complete(backend, data=DATA, task=base.TRANSACTION_RISK, wait=10):
    """The backend's answer; a hang fails the test (the wait) instead of the suite."""
    try:
        return runner.submit(backend.complete(task, data, base.FAST)).result(wait)
    finally:
        runner.submit(backend.aclose()).result(5)


def _backend(handle, **config):
    return OpenAiBackend(LlmConfig(backend="openai", base_url=handle.base_url,
                                   fast_model="small", **config))


def test_an_answer_dripped_a_byte_at_a_time_hits_the_request_deadline(llm_server):
    llm_server.settings.fault_script = ["drip"]
    llm_server.settings.drip_seconds = 0.05  # each read is quick; the whole answer is not
    started = time.monotonic()
    with pytest.raises(LlmPermanentError, match="timed out"):
        _complete(_backend(llm_server, timeout_seconds=0.5, max_retries=0))
    assert time.monotonic() - started < 3
    assert llm_server.stats["drips"] == 1


def test_usage_of_the_wrong_type_is_counted_as_estimated(llm_server):
    llm_server.settings.fault_script = ["usage_wrong_type"]
    result = _complete(_backend(llm_server))
    assert result.answer["risk_score"] > 0.8 and result.requests == 1
    # our estimate is the server's own count
    assert result.input_tokens == llm_server.stats["prompt_tokens"] > 0
    assert result.output_tokens == llm_server.stats["completion_tokens"] > 0


def test_content_of_the_wrong_type_is_an_invalid_answer_and_asked_again(llm_server):
    llm_server.settings.fault_script = ["content_wrong_type"]
    result = _complete(_backend(llm_server, max_retries=1))
    assert result.answer["risk_score"] > 0.8
    assert [spend.failure for spend in result.spent] == ["invalid answer", None]
    assert result.input_tokens == llm_server.stats["prompt_tokens"]  # the failed one's too


def test_packed_answers_of_the_wrong_type_do_not_hang_the_batch(llm_server):
    llm_server.settings.fault_script = ["content_wrong_type", "usage_wrong_type"]
    backend = make_backend(LlmConfig(backend="openai", base_url=llm_server.base_url,
                                     fast_batch_size=4, batch_wait_ms=1000, max_retries=0))
    items = [{**DATA, "transaction": {**DATA["transaction"], "transaction_id": f"tx-{i}"}}
             for i in range(4)]

    async def ask_all():
        return await asyncio.gather(*(backend.complete(base.TRANSACTION_RISK, item, base.FAST)
                                      for item in items))

    try:
        results = runner.submit(ask_all()).result(10)
    finally:
        runner.submit(backend.aclose()).result(5)
    # the packed call's answer was invalid: each was asked alone, one of them given bad usage
    assert [r.answer["risk_score"] > 0.8 for r in results] == [True] * 4
    assert not any(r.degraded for r in results) and llm_server.stats["requests"] == 5
    assert sum(r.input_tokens for r in results) == llm_server.stats["prompt_tokens"]


def test_a_nan_risk_score_is_rejected(llm_server):
    llm_server.settings.fault_script = ["nan"]
    with pytest.raises(LlmPermanentError, match="invalid answer"):
        _complete(_backend(llm_server, max_retries=0))
    for number in ("NaN", "Infinity", "-Infinity", "1e999"):
        with pytest.raises(tasks.InvalidAnswer, match="not a finite number"):
            tasks.parse_answer(base.TRANSACTION_RISK,
                               f'{{"risk_score": {number}, "reason": "r"}}')


def test_a_probe_answered_with_429_closes_the_circuit(llm_server, monkeypatch):
    monkeypatch.setattr(endpoints, "CircuitBreaker", functools.partial(
        CircuitBreaker, failure_limit=2, cooldown_seconds=0.1))
    llm_server.settings.fault_script = ["server_error", "server_error", "rate_limited"]
    backend = _backend(llm_server, max_retries=0)

    async def ask():
        return await backend.complete(base.TRANSACTION_RISK, DATA, base.FAST)

    try:
        for expected in ("HTTP 500", "HTTP 500", "circuit open"):  # the circuit opens
            with pytest.raises(LlmPermanentError, match=expected):
                runner.submit(ask()).result(10)
        time.sleep(0.15)
        with pytest.raises(LlmPermanentError, match="HTTP 429"):  # the probe: the endpoint is up
            runner.submit(ask()).result(10)
        assert runner.submit(ask()).result(10).answer["risk_score"] > 0.8
    finally:
        runner.submit(backend.aclose()).result(5)
    assert llm_server.stats["requests"] == 4


def test_a_probe_that_never_reports_back_gives_way_to_another():
    breaker = CircuitBreaker(failure_limit=1, cooldown_seconds=0.05, probe_timeout_seconds=0.1)
    breaker.failed()
    time.sleep(0.06)
    breaker.before_call()  # the probe, cancelled before it could report
    time.sleep(0.11)
    breaker.before_call()  # not open for good: another probe goes
    breaker.succeeded()
    assert not breaker.is_open


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_refused_connection_is_reported_as_a_refusal(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    backend = OpenAiBackend(LlmConfig(backend="openai", max_retries=0,
                                      base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(LlmPermanentError, match="connection refused") as failure:
        _complete(backend)
    assert failure.value.reason == "connection refused"


def test_a_deep_call_cut_by_its_budget_is_counted():
    handle = server.start_in_thread(port=0, model_latency_ms={"big": 3000})
    try:
        backend = make_backend(LlmConfig(backend="openai", base_url=handle.base_url,
                                         fast_model="small", deep_model="big",
                                         latency_budget_ms=300))
        data = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}
        result = runner.submit(backend.complete(base.DASHBOARD_INSIGHT, data, base.DEEP)
                               ).result(10)
    finally:
        handle.stop()
    cut, answered = result.spent
    assert result.fell_back and result.requests == 2
    assert (cut.model, cut.failure, answered.model, answered.failure) == (
        "big", "cut", "small", None)
    # the prompt it was sent is counted, as estimated: the same prompt as the fast call's
    assert cut.input_tokens == answered.input_tokens > 0 and cut.latency_ms > 0

