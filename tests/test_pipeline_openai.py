"""The main command through the real `openai` client against our OpenAI-compatible server."""
import json
import pathlib
import re

import pyarrow.parquet as pq
import pytest

from realtime_ai.llm import base, server, tasks
from realtime_ai.pipelines import main

pytestmark = pytest.mark.integration

REPO = pathlib.Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def _head(path, count):
    return [line for line in path.read_text().splitlines() if line.strip()][:count]


@pytest.fixture()
def inputs(tmp_path):
    tx = _head(SAMPLES / "transactions.jsonl", 400)
    metrics = _head(SAMPLES / "metrics.jsonl", 600)
    (tmp_path / "tx.jsonl").write_text("\n".join(tx) + "\n")
    (tmp_path / "metrics.jsonl").write_text("\n".join(metrics) + "\n")
    return tmp_path, len(tx), len(metrics)


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    assert main.main([f"--transactions={tmp_path}/tx.jsonl",
                      f"--metrics={tmp_path}/metrics.jsonl",
                      f"--output={out}", "--runner=DirectRunner", *extra]) == 0
    return {n: pq.read_table(out / n).to_pylist()
            for n in ("transactions", "metrics", "alerts", "insights", "dead_letter")}


def test_openai_backend_matches_local_model_answers(inputs, monkeypatch):
    tmp_path, n_tx, n_metrics = inputs
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    handle = server.start_in_thread(port=0, latency_ms=5)
    try:
        remote = _run(tmp_path, "remote", f"--llm_base_url={handle.base_url}",
                      "--fast_model=small-test", "--deep_model=big-test")
    finally:
        handle.stop()
    local = _run(tmp_path, "local", "--llm_backend=local")
    assert len(remote["transactions"]) == n_tx and len(remote["metrics"]) == n_metrics
    assert {r["model"] for r in remote["transactions"]} <= {"small-test", "small-test+big-test"}
    by_id = {r["transaction_id"]: r for r in local["transactions"]}
    for row in remote["transactions"]:
        assert row["risk_score"] == by_id[row["transaction_id"]]["risk_score"]
    assert sorted(a["alert_id"] for a in remote["alerts"]) == sorted(
        a["alert_id"] for a in local["alerts"])
    assert not remote["dead_letter"]


def test_failing_endpoint_loses_nothing(inputs, monkeypatch, capsys):
    tmp_path, n_tx, n_metrics = inputs
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    handle = server.start_in_thread(port=0, latency_ms=2, error_rate=0.3, seed=4)
    try:
        result = _run(tmp_path, "flaky", f"--llm_base_url={handle.base_url}",
                      "--llm_max_retries=1", "--llm_timeout_seconds=2",
                      "--on_model_failure=dead_letter")
    finally:
        handle.stop()
    dead = result["dead_letter"]
    risk_failures = [d for d in dead if d["source"] == "llm:transaction_risk"]
    assert risk_failures, "with 30% failures and one retry some requests must fail for good"
    assert len(result["transactions"]) + len(risk_failures) == n_tx
    assert len(result["metrics"]) == n_metrics  # explanation failures keep their row
    originals = {json.loads(line)["transaction_id"]: json.loads(line)
                 for line in (tmp_path / "tx.jsonl").read_text().splitlines()}
    for failure in risk_failures:
        # the original record, customer_id and all, so that it can be replayed
        record = json.loads(failure["payload"])
        assert record == originals[record["transaction_id"]]
        assert json.loads(failure["context"])["features"]
        assert failure["error"]
        assert "sk-test-not-a-real-key" not in failure["error"]
    # the run's closing report counts what the outputs hold
    report = capsys.readouterr().out
    assert re.search(rf"/flaky/transactions +{len(result['transactions'])} rows", report)
    calls = re.search(r"Model calls: (\d+) events answered by the model, \d+ from cache, "
                      r"0 degraded to the local rules, (\d+) dead-lettered; (\d+) requests "
                      r"\((\d+) failed", report)
    answered, dead_lettered, requests, failed = map(int, calls.groups())
    assert dead_lettered == len([d for d in dead if d["source"].startswith("llm:")])
    # every failure is retriable here: each dead-lettered event was tried twice
    assert failed >= 2 * dead_lettered > 0 and answered >= len(result["transactions"])
    assert requests == answered + failed


def test_a_re_run_with_a_memo_asks_the_model_for_nothing(inputs, monkeypatch, capsys):
    """Long after the cache TTL (here 0 s), a second run of the same batch: 0 calls per event,
    the same rows (the remembered answers, with their latency and prompt version)."""
    tmp_path, n_tx, _ = inputs
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    handle = server.start_in_thread(port=0)
    options = [f"--llm_base_url={handle.base_url}", f"--memo={tmp_path}/memo",
               "--cache_ttl_seconds=0", "--fast_batch_size=5"]
    try:
        first = _run(tmp_path, "first", *options)
        first_calls = handle.stats["requests"]
        second = _run(tmp_path, "second", *options)
        second_calls = handle.stats["requests"] - first_calls
    finally:
        handle.stop()
    assert first_calls >= n_tx / 5 and second_calls == 0
    for name, rows in first.items():
        assert _sorted(second[name]) == _sorted(rows), name
    versions = {r["prompt_version"] for r in first["transactions"]}
    risk, analysis = (tasks.PROMPT_VERSIONS[t] for t in (base.TRANSACTION_RISK,
                                                          base.TRANSACTION_ANALYSIS))
    assert risk in versions and versions <= {risk, f"{risk}+{analysis}"}
    # quiet windows ask no model (and have no prompt version)
    assert {r["prompt_version"] for r in first["insights"] if r["model"]} <= {
        tasks.PROMPT_VERSIONS[base.DASHBOARD_INSIGHT]}
    assert re.search(r"\d+ of those from cache remembered from earlier runs",
                     capsys.readouterr().out)


def _sorted(rows):
    return sorted(rows, key=lambda row: json.dumps(row, sort_keys=True, default=str))
