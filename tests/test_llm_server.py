"""Our OpenAI-compatible test server as its command line starts it."""
import json
import subprocess
import sys
import time
import urllib.request

from realtime_ai.llm import base, local_model, server, tasks

RISK_DATA = {
    "transaction": {"transaction_id": "tx-1", "amount": 40.0, "currency": "EUR",
                    "merchant": "Cafe Uno", "merchant_category": "restaurants",
                    "country": "BR", "channel": "in_store",
                    "timestamp": "2026-03-02T09:00:00Z"},
    "features": {"history_count": 12, "mean_amount": 38.0, "std_amount": 6.0,
                 "amount_zscore": 0.33, "velocity_1h": 0, "amount_1h": 0.0,
                 "seconds_since_last": 3600.0, "new_country": True,
                 "new_merchant_category": False, "last_country": "DE"},
}


def _risk(base_url: str, model: str) -> float:
    body = {"model": model, "messages": tasks.build_messages(base.TRANSACTION_RISK, RISK_DATA),
            "response_format": tasks.response_format(base.TRANSACTION_RISK)}
    request = urllib.request.Request(f"{base_url}/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    return json.loads(answer["choices"][0]["message"]["content"])["risk_score"]


def test_the_command_line_server_answers_and_shifts_one_models_risk():
    """Its settings were passed by position, and a field added in between made every answer
    of the command-line server a 401."""
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.llm.server", "--port", "0",
         "--model_risk_offset", "shadow-m=-0.5"], stdout=subprocess.PIPE, text=True)
    try:
        base_url = process.stdout.readline().split()[-1]
        expected = local_model.transaction_risk(RISK_DATA)["risk_score"]
        assert _risk(base_url, "fast-m") == expected
        assert _risk(base_url, "shadow-m") == round(expected - 0.5, 4)
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_time_taken_to_answer_is_part_of_the_latency(monkeypatch):
    """--latency_ms is the time from the request to its answer, as with a provider: the
    server's own work on a request used to come on top of it."""
    answer = local_model.answer

    def slow_answer(task, data):
        time.sleep(1.0)
        return answer(task, data)

    monkeypatch.setattr(local_model, "answer", slow_answer)
    handle = server.start_in_thread(port=0, latency_ms=1000)
    try:
        started = time.monotonic()
        _risk(handle.base_url, "gpt-4o-mini")
        elapsed = time.monotonic() - started
    finally:
        handle.stop()
    assert 1.0 <= elapsed < 1.7


def test_answer_times_are_kept_by_task_for_what_a_job_asked_last():
    """benchmarks/model_overlap.py tells the risk-scoring phase from the calls after it (deep
    analyses, insights) by the task of each answer; a request that is none of the pipeline's
    tasks is answered as `other`."""
    handle = server.start_in_thread(port=0)
    try:
        _risk(handle.base_url, "gpt-4o-mini")
        question = {"model": "gpt-4o", "messages": tasks.question_messages("Why?", {})}
        urllib.request.urlopen(urllib.request.Request(
            f"{handle.base_url}/chat/completions", json.dumps(question).encode(),
            {"Content-Type": "application/json"}), timeout=10).close()
        _risk(handle.base_url, "gpt-4o-mini")
        stats_url = handle.base_url.removesuffix("/v1") + "/stats"
        with urllib.request.urlopen(f"{stats_url}/answer_times_by_task", timeout=10) as reply:
            by_task = json.loads(reply.read())
        with urllib.request.urlopen(f"{stats_url}/answer_times", timeout=10) as reply:
            times = json.loads(reply.read())
    finally:
        handle.stop()
    assert sorted(by_task) == [server.OTHER_ANSWER, base.TRANSACTION_RISK]
    risk_times, (question_time,) = by_task[base.TRANSACTION_RISK], by_task[server.OTHER_ANSWER]
    assert len(risk_times) == 2 and risk_times[0] < question_time < risk_times[1]
    assert times == sorted(risk_times + [question_time])
