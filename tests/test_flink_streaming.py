"""The streaming job on a real Flink cluster: events published live to Kafka, read through
Beam's cross-language KafkaIO, alerts published to Pub/Sub (the emulator); outputs equal a
DirectRunner batch run over the same (re-timed) events."""
import json
import subprocess
import sys
import time
import urllib.request
import uuid

import pyarrow.parquet as pq
import pytest

from realtime_ai.core.records import OUTPUT_SCHEMAS
from realtime_ai.pipelines import main
from realtime_ai.pipelines.flink_jobs import ACTIVE_STATES
from tests.compare import comparable_rows
from tests.conftest import REPO
from tests.pubsub_helpers import pull_all, topic_with_subscription
from tests.test_streaming_pubsub import PUBLISH_SECONDS, SHARED_OPTIONS, _sample_slices

STREAMING_OPTIONS = ["--file_window_seconds=10", "--window_grace_seconds=15"]
STARTUP_SECONDS = 15  # Kafka keeps what is produced before the job reads: no race here
RUN_SECONDS = 180  # job submission, the live stream, and the last windows closing


@pytest.mark.integration
@pytest.mark.flink
def test_kafka_events_become_pubsub_alerts_and_the_batch_runs_rows(flink, kafka, emulator,
                                                                   tmp_path):
    transactions, metrics = _sample_slices(tmp_path)
    bootstrap = kafka["KAFKA_BOOTSTRAP"]
    topics = {name: f"kafka://{bootstrap}/{name}-{uuid.uuid4().hex[:8]}"
              for name in ("transactions", "metrics")}
    alerts_topic, subscriber, alerts_sub = topic_with_subscription("alerts-flink")
    job = subprocess.Popen(
        [sys.executable, "-m", "realtime_ai.pipelines.main", "--runner=FlinkRunner",
         f"--flink_master={flink['FLINK_MASTER']}", f"--transactions={topics['transactions']}",
         f"--metrics={topics['metrics']}", f"--output={tmp_path}/stream",
         f"--alerts_topic={alerts_topic}", *SHARED_OPTIONS[1:], *STREAMING_OPTIONS,
         f"--max_run_seconds={RUN_SECONDS}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(STARTUP_SECONDS)
    publishers = [
        subprocess.Popen(
            [sys.executable, "-m", "realtime_ai.samples", "publish", f"--{name}", str(path),
             f"--{name}-topic", topics[name], "--rate", f"{count / PUBLISH_SECONDS:.3f}",
             "--dump", str(tmp_path / "published")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, path, count in (("transactions", tmp_path / "tx.jsonl", transactions),
                                  ("metrics", tmp_path / "m.jsonl", metrics))]
    for publisher in publishers:
        assert publisher.wait(timeout=PUBLISH_SECONDS * 3) == 0, publisher.stdout.read()
    job_log = job.communicate(timeout=RUN_SECONDS + 300)[0]
    assert job.returncode == 0, job_log[-3000:]
    assert "Traceback" not in job_log, job_log[-3000:]
    with urllib.request.urlopen(f"http://{flink['FLINK_MASTER']}/jobs/overview") as response:
        jobs = json.load(response)
    still_active = [job for job in jobs["jobs"] if job["state"] in ACTIVE_STATES]
    assert still_active == []  # the cancelled job holds no task slots
    newest = max(jobs["jobs"], key=lambda job: job["start-time"])
    with urllib.request.urlopen(
            f"http://{flink['FLINK_MASTER']}/jobs/{newest['jid']}/config") as response:
        runner_options = json.load(response)["execution-config"]["user-config"]
    # Outputs kept in a savepoint were sent on to the wrong dataset by the restored job.
    assert runner_options["finishBundleBeforeCheckpointing"] == "true"

    assert main.main([f"--transactions={tmp_path}/published/tx.jsonl",
                      f"--metrics={tmp_path}/published/m.jsonl",
                      f"--output={tmp_path}/batch", *SHARED_OPTIONS]) == 0
    for name in OUTPUT_SCHEMAS:
        batch = comparable_rows(pq.read_table(tmp_path / "batch" / name))
        streamed = comparable_rows(pq.read_table(tmp_path / "stream" / name)) if batch else []
        assert streamed == batch, name
    alert_ids = {alert["alert_id"] for alert in pq.read_table(tmp_path / "batch" / "alerts")
                 .to_pylist()}
    assert alert_ids and {m.attributes["alert_id"]
                          for m in pull_all(subscriber, alerts_sub)} == alert_ids
