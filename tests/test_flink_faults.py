"""The figures of benchmarks/flink_faults.py (`make test-faults`), on made-up job outputs and
REST samples: what it calls lost, duplicated and recovered must be what happened."""
import json
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import REPO, benchmark_script

sys.path.insert(0, str(REPO / "benchmarks"))  # where the script finds flink_latency
flink_faults = benchmark_script("flink_faults")


def _dataset(folder, rows):
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")


def test_lost_duplicated_and_alerts_after_dedupe_are_counted(tmp_path):
    (tmp_path / "published").mkdir()
    (tmp_path / "published" / "transactions.jsonl").write_text(
        "".join(json.dumps({"transaction_id": f"tx-{n}"}) + "\n" for n in (1, 2, 3)))
    _dataset(tmp_path / "stream" / "transactions",
             [{"transaction_id": "tx-1"}, {"transaction_id": "tx-1"}])
    _dataset(tmp_path / "stream" / "dead_letter",
             [{"source": "llm:transaction_risk",
               "payload": json.dumps({"transaction_id": "tx-3"}),
               "error": "transaction_risk via m failed after 5 attempt(s): circuit open: x",
               "context": None},
              {"source": "llm:metric_anomaly", "error": "metric_anomaly via m failed",
               "payload": json.dumps({"metric": "db.cpu_pct",
                                      "timestamp": "2026-12-01T20:02:54.884Z"}),
               "context": None},
              {"source": "metrics", "payload": "not json", "error": "parse: bad", "context": None}])
    _dataset(tmp_path / "stream" / "alerts", [{"alert_id": "a1"}, {"alert_id": "a1"}])
    moment = datetime(2026, 12, 1, 20, 2, 54, 884000, tzinfo=timezone.utc)
    _dataset(tmp_path / "batch" / "alerts", [
        {"alert_id": alert_id, "subject": subject, "event_time": moment}
        for alert_id, subject in (("a1", "tx-1"), ("a2", "tx-2"), ("a4", "tx-3"),
                                  ("m1", "db.cpu_pct"))])
    _dataset(tmp_path / "batch" / "transactions",
             [{"transaction_id": "tx-1"}, {"transaction_id": "tx-2"}])

    figures = flink_faults.record_figures(
        tmp_path, [{"alert_id": "a1"}, {"alert_id": "a1"}, {"alert_id": "a3"}])

    assert (figures["transactions_lost"], figures["transactions_duplicated"],
            figures["transactions_dead_lettered"]) == (1, 1, 1)  # tx-2; tx-1 twice; tx-3
    assert figures["dead_letter_reasons"] == {"llm:transaction_risk: circuit open": 1}
    assert figures["alerts_batch_of_dead_letters"] == 2  # a4: tx-3's; m1: the metric value's
    assert (figures["alerts_parquet_missing"], figures["alerts_parquet_extra"],
            figures["alerts_parquet_duplicated"]) == (1, 0, 1)
    assert (figures["alerts_pubsub_messages"], figures["alerts_pubsub_missing_after_dedupe"],
            figures["alerts_pubsub_extra_after_dedupe"]) == (3, 1, 1)
    assert figures["datasets_equal_batch"]["transactions"] is False
    assert figures["datasets_equal_batch"]["alerts"] is False
    assert not flink_faults.passed({"records": figures})


def _sample(t, state, source_records, watermarks):
    return {"t": t, "state": state, "vertices": {
        "source": {"records_out": source_records, "input_watermark_ms": []},
        "keyed": {"records_out": None, "input_watermark_ms": watermarks}}}


def test_recovery_waits_for_reading_and_for_the_watermark_to_pass_the_fault():
    samples = [_sample(8, "RUNNING", 90, [900]),
               _sample(10, "RUNNING", 100, [1000]),  # the fault comes at 11, over at 15
               _sample(12, "RESTARTING", 100, [1000]),
               _sample(16, "RUNNING", 0, []),  # restored: counters start again
               _sample(18, "RUNNING", 50, [950]),  # reading the replay, watermark behind
               _sample(20, "RUNNING", 80, [1001])]

    assert flink_faults.recovery(samples, ["source"], fault_start=11, fault_end=15) == {
        "reading_again_s": 7, "watermark_passed_s": 9}


def _plan(ids, fused):
    source, keyed = ids
    return {"plan": {"nodes": [{"id": source, "description": "ReadFromKafka", "inputs": []},
                               {"id": keyed, "description": fused,
                                "inputs": [{"id": source}]}]}}


def _renamed(sample, ids):
    return {**sample, "vertices": dict(zip(ids, sample["vertices"].values(), strict=True))}


def test_recovery_follows_the_steps_into_the_job_restored_from_a_savepoint():
    # the same steps, other vertex ids, fused steps listed in another order
    first, restored = ("a1", "b1"), ("a2", "b2")
    stopped = [_renamed(_sample(8, "RUNNING", 90, [900]), first),
               _renamed(_sample(10, "RUNNING", 100, [1000]), first)]
    resumed = [_renamed(_sample(40, "RUNNING", 0, []), restored),
               _renamed(_sample(42, "RUNNING", 30, [990]), restored),
               _renamed(_sample(44, "RUNNING", 60, [1005]), restored)]
    samples, sources = [], []
    for plan, part in ((_plan(first, "[26]{CustomerHistory, Enrich}"), stopped),
                       (_plan(restored, "[26]{Enrich, CustomerHistory}"), resumed)):
        renamed, sources = flink_faults.vertices_by_step(plan, part)
        samples += renamed

    assert sources == ["ReadFromKafka"]
    assert flink_faults.recovery(samples, sources, fault_start=11, fault_end=30) == {
        "reading_again_s": 31, "watermark_passed_s": 33}
