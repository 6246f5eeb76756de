"""Alerts and insights published to a real Pub/Sub server (the emulator), with attributes."""
import json
import os
import pathlib
import subprocess

import pyarrow.parquet as pq
import pytest

from realtime_ai.io.pubsub import pubsub_message
from realtime_ai.pipelines import main
from tests.pubsub_helpers import pull_all, topic_with_subscription

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_message_body_and_attributes():
    from datetime import datetime, timezone

    row = {"alert_id": "tra-1", "kind": "transaction", "severity": "high",
           "event_time": datetime(2026, 1, 5, tzinfo=timezone.utc), "summary": "s"}
    data, attributes = pubsub_message(row, ("alert_id", "kind", "severity"))
    assert json.loads(data)["event_time"] == "2026-01-05T00:00:00Z"
    assert attributes == {"alert_id": "tra-1", "kind": "transaction", "severity": "high"}


@pytest.mark.integration
def test_batch_run_publishes_every_alert_with_its_attributes(emulator, tmp_path):
    alerts_topic, subscriber, alerts_sub = topic_with_subscription("alerts-batch")
    insights_topic, _, insights_sub = topic_with_subscription("insights-batch")
    lines = (REPO / "samples" / "transactions.jsonl").read_text().splitlines()[:800]
    (tmp_path / "tx.jsonl").write_text("\n".join(lines) + "\n")
    assert main.main([f"--transactions={tmp_path}/tx.jsonl",
                      f"--metrics={REPO}/samples/metrics.jsonl",
                      f"--output={tmp_path}/out", "--runner=DirectRunner",
                      f"--alerts_topic={alerts_topic}",
                      f"--insights_topic={insights_topic}"]) == 0
    alerts = pq.read_table(tmp_path / "out" / "alerts").to_pylist()
    messages = pull_all(subscriber, alerts_sub)
    assert alerts and len(messages) == len(alerts)
    assert {m.attributes["alert_id"] for m in messages} == {a["alert_id"] for a in alerts}
    for message in messages:
        body = json.loads(message.data)
        assert body["alert_id"] == message.attributes["alert_id"]
        assert message.attributes["kind"] in ("transaction", "metric")
        assert message.attributes["severity"] == body["severity"]
    insights = pq.read_table(tmp_path / "out" / "insights").num_rows
    assert len(pull_all(subscriber, insights_sub)) == insights


def test_bad_topic_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        ["python", "-m", "realtime_ai.pipelines.main", f"--metrics={REPO}/samples/metrics.jsonl",
         f"--output={tmp_path}", "--alerts_topic=projects/local/topics/alerts"],
        capture_output=True, text=True, cwd=REPO,
        env={**os.environ, "PATH": f"{REPO}/.venv/bin:{os.environ['PATH']}"})
    assert proc.returncode == 2 and "--alerts_topic must be" in proc.stderr
