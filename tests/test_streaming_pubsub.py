"""The streaming job end to end: sample events published live to the Pub/Sub emulator by
`python -m realtime_ai.samples publish`, the main command reading the subscriptions in
streaming on one machine (the DirectRunner option runs it on Prism), alerts read back from the
alerts topic; the result must equal a batch run over the same (re-timed) events."""
import json
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from realtime_ai.core.records import OUTPUT_SCHEMAS
from realtime_ai.io.pubsub_admin import EMULATOR_PROJECT, ensure_subscription
from realtime_ai.pipelines import main
from tests.compare import comparable_rows
from tests.conftest import REPO
from tests.pubsub_helpers import pull_all, topic_with_subscription

# Detector and windows chosen so a few minutes of samples give alerts of both kinds and
# several insight and file windows, in a test of about a minute.
SHARED_OPTIONS = ["--runner=DirectRunner", "--anomaly_detector=zscore",
                  "--insight_window_seconds=10"]
STREAMING_OPTIONS = ["--file_window_seconds=10", "--window_grace_seconds=15"]
STARTUP_SECONDS = 10  # the job is reading before the first event is due
PUBLISH_SECONDS = 30
SETTLE_SECONDS = 35  # last windows close (window + grace) and are written
BAD_PAYLOADS = ["not json at all", '{"metric": "queue.depth", "value": "high"}']


def _sample_slices(folder):
    """Half an hour of transactions with card-testing bursts and ten minutes of two metrics
    with injected anomalies, plus bad payloads, as the files to publish: about 6 events per
    second over PUBLISH_SECONDS, well within what the DirectRunner keeps up with."""
    def rows(name, keep):
        lines = (REPO / "samples" / name).read_text().splitlines()
        return [line for line in lines if keep(json.loads(line))]

    transactions = rows("transactions.jsonl",
                        lambda tx: "2026-01-06T15:30" <= tx["timestamp"] < "2026-01-06T16:00")
    metrics = rows("metrics.jsonl", lambda m: m["metric"] in ("queue.depth", "db.cpu_pct")
        and "2026-01-05T01:10" <= m["timestamp"] < "2026-01-05T01:20")
    metrics[len(metrics) // 2:len(metrics) // 2] = BAD_PAYLOADS
    (folder / "tx.jsonl").write_text("\n".join(transactions) + "\n")
    (folder / "m.jsonl").write_text("\n".join(metrics) + "\n")
    return len(transactions), len(metrics)


def _publisher(name, path, topic, events_per_second, dump):
    return subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.samples", "publish", f"--{name}", str(path),
         f"--{name}-topic", topic, "--rate", f"{events_per_second:.3f}", "--dump", str(dump)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.integration
def test_live_stream_gives_the_batch_runs_rows_and_alerts(emulator, prism, tmp_path):
    transactions, metrics = _sample_slices(tmp_path)
    subscriptions = {
        name: ensure_subscription(EMULATOR_PROJECT, topic, f"{topic}-job")
        for name, topic in (("transactions", f"tx-{tmp_path.name}"),
                            ("metrics", f"m-{tmp_path.name}"))}
    alerts_topic, subscriber, alerts_sub = topic_with_subscription("alerts-stream")
    job = subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.pipelines.main",
         f"--transactions={subscriptions['transactions']}",
         f"--metrics={subscriptions['metrics']}", f"--output={tmp_path}/stream",
         f"--alerts_topic={alerts_topic}", *SHARED_OPTIONS, *STREAMING_OPTIONS,
         f"--prism_location={prism}",
         f"--max_run_seconds={STARTUP_SECONDS + PUBLISH_SECONDS + SETTLE_SECONDS}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(STARTUP_SECONDS)
    publishers = []
    for name, path, count in (("transactions", tmp_path / "tx.jsonl", transactions),
                              ("metrics", tmp_path / "m.jsonl", metrics)):
        topic = subscriptions[name].replace("/subscriptions/", "/topics/").removesuffix("-job")
        publishers.append(_publisher(name, path, topic, count / PUBLISH_SECONDS,
                                     tmp_path / "published"))
    for publisher in publishers:
        assert publisher.wait(timeout=PUBLISH_SECONDS * 3) == 0, publisher.stdout.read()
    job_log = job.communicate(timeout=STARTUP_SECONDS + PUBLISH_SECONDS + SETTLE_SECONDS + 60)[0]
    assert job.returncode == 0, job_log

    assert main.main([f"--transactions={tmp_path}/published/tx.jsonl",
                      f"--metrics={tmp_path}/published/m.jsonl",
                      f"--output={tmp_path}/batch", *SHARED_OPTIONS]) == 0
    for name in OUTPUT_SCHEMAS:
        streamed = pq.read_table(tmp_path / "stream" / name)
        batch = pq.read_table(tmp_path / "batch" / name)
        assert comparable_rows(streamed) == comparable_rows(batch), name
    batch_alerts = pq.read_table(tmp_path / "batch" / "alerts").to_pylist()
    assert {alert["kind"] for alert in batch_alerts} == {"transaction", "metric"}
    published_ids = {m.attributes["alert_id"] for m in pull_all(subscriber, alerts_sub)}
    assert published_ids == {alert["alert_id"] for alert in batch_alerts}
    assert pq.read_table(tmp_path / "stream" / "dead_letter").num_rows == len(BAD_PAYLOADS)
    # the report counts the model calls the rows show: a risk score per transaction, an
    # analysis per escalated one, an explanation per anomaly, an insight per unusual window
    streamed = {name: pq.read_table(tmp_path / "stream" / name).to_pylist()
                for name in ("transactions", "metrics", "insights")}
    calls = (len(streamed["transactions"])
             + sum(row["analysis"] is not None for row in streamed["transactions"])
             + sum(row["analysis"] is not None for row in streamed["metrics"])
             + sum(row["model"] is not None for row in streamed["insights"]))
    assert f"Model calls: {calls} events answered by the model" in job_log, job_log[-3000:]

    # every row is in the file of its own event-time window
    for path in (tmp_path / "stream" / "metrics").rglob("*.parquet"):
        start, end = path.name.split("-pane-")[0].split("-")
        for row in pq.read_table(path).to_pylist():
            assert start <= row["event_time"].strftime("%Y%m%dT%H%M%S") < end, path.name


@pytest.mark.integration
def test_a_streaming_run_without_rows_leaves_every_dataset_readable(emulator, prism, tmp_path):
    subscription = ensure_subscription(EMULATOR_PROJECT, f"quiet-{tmp_path.name}",
                                       f"quiet-{tmp_path.name}-job")
    job = subprocess.run(
        [sys.executable, "-m", "realtime_ai.pipelines.main", f"--metrics={subscription}",
         f"--output={tmp_path}/stream", *SHARED_OPTIONS, *STREAMING_OPTIONS,
         f"--prism_location={prism}", "--max_run_seconds=15"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr
    for name, schema in OUTPUT_SCHEMAS.items():
        table = pq.read_table(tmp_path / "stream" / name)  # no rows, and yet a dataset
        assert table.num_rows == 0 and set(schema.names) <= set(table.schema.names), name
        assert f"{tmp_path}/stream/{name} " in job.stdout
