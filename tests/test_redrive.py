"""Dead letters keep their record and go through the pipeline again (core/replay.py,
pipelines/redrive.py)."""
import json
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from realtime_ai.core import replay
from realtime_ai.core.features import CustomerProfile
from realtime_ai.core.model_inputs import DashboardWindow, summarise_window
from realtime_ai.core.parsing import parse_metric, parse_transaction
from realtime_ai.core.records import (
    DEAD_LETTER_SCHEMA,
    DeadLetter,
    MetricRecord,
    MetricScore,
    ScoredMetric,
    Transaction,
)
from realtime_ai.core.rows import dead_letter_row
from realtime_ai.llm import server
from realtime_ai.pipelines import redrive
from tests.test_pipeline_openai import SAMPLES, _head

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)


def _tx(i, minutes=0, country="DE"):
    return Transaction(f"tx-{i}", "c1", 10.0 + i, "EUR", "shop", "online", country, "online",
                       T0 + timedelta(minutes=minutes))


def _featured():
    profile = CustomerProfile(10)
    for i in range(3):
        profile.advance(_tx(i, i))
    return profile.advance(_tx(9, 5, country="FR"))


def _scored(timestamp="2026-01-05T12:00:00Z", metadata=(("dashboard_id", "d1"),)):
    record = MetricRecord("cpu", 97.5, T0, timestamp, metadata)
    return ScoredMetric(record, MetricScore(4.2, 0.99, True, 50.0, 10.0, 80))


def _failure(task, replayable):
    return dead_letter_row(DeadLetter(f"llm:{task}", replayable.payload, "boom",
                                      replayable.context))


def test_a_record_line_parses_back_to_the_same_record():
    tx = _tx(1)
    assert parse_transaction(replay.transaction_line(tx), 10_000) == tx
    for record in (_scored().record,
                   # a timestamp that came as epoch milliseconds, metadata that came as numbers
                   parse_metric('{"metric": "m", "value": 1, "timestamp": 1767614400000, '
                                '"metadata": {"shard": 3, "dashboard_id": "d"}}', 10_000)):
        assert parse_metric(replay.metric_line(record), 10_000) == record


def test_model_failures_come_back_as_they_failed():
    featured, scored = _featured(), _scored()
    window = DashboardWindow("d1", T0, T0 + timedelta(seconds=30), summarise_window([scored]))
    rows = [_failure("transaction_risk", replay.featured_transaction(featured)),
            _failure("metric_anomaly", replay.scored_metric(scored)),
            _failure("dashboard_insight", replay.dashboard_window(window))]
    plan = replay.plan_redrive(rows, answered=set())
    assert plan.inputs == replay.RedriveInputs(featured=(featured,), scored=(scored,),
                                               windows=(window,))
    assert featured.features.new_country and len(featured.recent) == 3  # kept, not recomputed
    assert json.loads(rows[0]["payload"])["customer_id"] == "c1"  # the record, whole


def test_each_event_goes_once_unless_answered_and_bad_payloads_are_counted():
    featured = _featured()
    failure = _failure("transaction_analysis", replay.featured_transaction(featured))
    fixed = {"source": "transactions", "payload": replay.transaction_line(_tx(7)),
             "error": "invalid JSON", "context": None}
    still_bad = {**fixed, "payload": '{"transaction_id": "x"'}
    # written before dead letters kept their record: the request data, no customer id
    older = {"source": "llm:transaction_risk", "payload": '{"transaction": {}}', "error": "e"}
    plan = replay.plan_redrive([failure, failure, fixed, still_bad, older], answered=set())
    assert plan.inputs.featured == (featured,) and len(plan.inputs.transaction_lines) == 1
    assert plan.not_replayable == 2
    answered = replay.answered_events(
        [{"transaction_id": "tx-9", "escalated": True, "analysis": '{"a": 1}'},
         {"transaction_id": "tx-7", "escalated": True, "analysis": None}], [], [])
    plan = replay.plan_redrive([failure, fixed], answered)
    assert plan.already_answered == 1 and plan.inputs.transaction_lines == (fixed["payload"],)


@pytest.mark.parametrize("make, problem", [
    (lambda folder: None, "does not exist"),
    (lambda folder: folder.mkdir(), "holds no files"),
    (lambda folder: (folder.mkdir(), (folder / "part-0.parquet").write_text("not parquet")),
     "is not a Parquet dataset"),
    (lambda folder: (folder.mkdir(), pq.write_table(pa.table({"x": [1]}),
                                                    folder / "part-0.parquet")),
     "is not a dead_letter dataset: no column source, payload, error"),
])
def test_a_missing_or_malformed_folder_is_a_one_line_error(tmp_path, capsys, make, problem):
    folder = tmp_path / "dead_letter"
    make(folder)
    assert redrive.main([f"--dead_letter={folder}", f"--output={tmp_path}/out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and problem in err and err.count("\n") == 1


def _inputs(tmp_path):
    tx = _head(SAMPLES / "transactions.jsonl", 120)
    tx.append(tx[7].replace('"amount": ', '"amount": "x').replace("tx-000007", "tx-fixed"))
    metrics = _head(SAMPLES / "metrics.jsonl", 600)
    (tmp_path / "tx.jsonl").write_text("\n".join(tx) + "\n")
    (tmp_path / "metrics.jsonl").write_text("\n".join(metrics) + "\n")


def _run(command, tmp_path, handle, *extra):
    assert command([f"--llm_base_url={handle.base_url}", "--llm_max_retries=0",
                    "--cache_ttl_seconds=0", "--runner=DirectRunner",
                    "--on_model_failure=dead_letter", *extra]) == 0


def _read(out, name, key):
    rows = pq.read_table(out / name).to_pylist()
    return {key(row): {k: v for k, v in row.items() if k != "llm_latency_ms"} for row in rows}


@pytest.mark.integration
def test_redrive_answers_model_failures_as_a_healthy_run_would_and_only_once(
        tmp_path, monkeypatch, capsys):
    from realtime_ai.pipelines import main

    _inputs(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    inputs = [f"--transactions={tmp_path}/tx.jsonl", f"--metrics={tmp_path}/metrics.jsonl",
              "--anomaly_detector=zscore"]  # anomalies from the first values on
    down = server.start_in_thread(port=0, error_rate=1.0, faults=("server_error",))
    healthy = server.start_in_thread(port=0)
    try:
        _run(main.main, tmp_path, healthy, *inputs, f"--output={tmp_path}/clean")
        _run(main.main, tmp_path, down, *inputs, f"--output={tmp_path}/failed")
        dead = pq.read_table(tmp_path / "failed" / "dead_letter").to_pylist()
        assert not (tmp_path / "failed" / "transactions").exists() or not pq.read_table(
            tmp_path / "failed" / "transactions").num_rows
        # the bad record fixed by hand in the dead letters
        for row in dead:
            if row["source"] == "transactions":
                row["payload"] = row["payload"].replace('"x', "")
        folder = tmp_path / "failed" / "dead_letter"
        for old in folder.iterdir():
            old.unlink()
        pq.write_table(pa.Table.from_pylist(dead, schema=DEAD_LETTER_SCHEMA),
                       folder / "part-fixed.parquet")
        redrive_options = [f"--dead_letter={folder}", f"--output={tmp_path}/redriven"]
        calls_before = healthy.stats["requests"]
        capsys.readouterr()
        _run(redrive.main, tmp_path, healthy, *redrive_options)
        first_calls = healthy.stats["requests"] - calls_before
        first_report = capsys.readouterr().out
        _run(redrive.main, tmp_path, healthy, *redrive_options)
        second_report = capsys.readouterr().out
    finally:
        down.stop()
        healthy.stop()
    sources = {row["source"] for row in dead}
    assert {"llm:transaction_risk", "llm:metric_anomaly", "llm:dashboard_insight",
            "transactions"} <= sources
    clean, redriven = tmp_path / "clean", tmp_path / "redriven"
    tx_key = lambda row: row["transaction_id"]  # noqa: E731
    clean_tx, redriven_tx = _read(clean, "transactions", tx_key), _read(
        redriven, "transactions", tx_key)
    assert redriven_tx.pop("tx-fixed")["amount"] > 0
    assert redriven_tx == clean_tx  # same features and history: the same question, answered
    metric_key = lambda row: (row["metric"], row["timestamp"])  # noqa: E731
    assert _read(redriven, "metrics", metric_key) == {
        k: v for k, v in _read(clean, "metrics", metric_key).items() if v["is_anomaly"]}
    insight_key = lambda row: (row["dashboard_id"], row["window_start"])  # noqa: E731
    # a quiet window's insight asks no model, so it never failed: only the others come back.
    # A redriven window keeps the alert ids its first run saw: an alert that the redrive
    # itself raised (its explanation had failed too) is not linked to it.
    redriven_insights = _read(redriven, "insights", insight_key)
    clean_insights = {key: row for key, row in _read(clean, "insights", insight_key).items()
                      if row["model"]}
    for key, row in redriven_insights.items():
        assert set(row.pop("alert_ids")) <= set(clean_insights[key].pop("alert_ids")), key
    assert redriven_insights == clean_insights
    assert _read(redriven, "alerts", lambda row: row["alert_id"]) == _read(
        clean, "alerts", lambda row: row["alert_id"])
    assert not pq.read_table(redriven / "dead_letter").num_rows
    assert first_calls >= len(redriven_tx) and "0 already answered" in first_report
    # a second redrive sends nothing and writes nothing
    assert ("Redrive: 0 event(s) sent again" in second_report
            and f"{len(dead)} already answered under --output; 0 not replayable"
            in second_report)
    files = [p.name for p in (redriven / "transactions").iterdir()]
    assert len({name.rsplit("-", 3)[0] for name in files}) == 1  # the first redrive's only
