"""The seeded sample generator: deterministic, well-formed, with separable labelled fraud."""
import collections
import json
from datetime import datetime

import pyarrow.parquet as pq

from realtime_ai.core.parsing import parse_metric, parse_transaction
from realtime_ai.samples.__main__ import main
from realtime_ai.samples.generate import PATTERNS, generate, parse_start

START = parse_start("2026-01-05T00:00:00Z")


def test_same_seed_same_bytes(tmp_path):
    for name in ("a", "b"):
        main(["generate", "--out", str(tmp_path / name), "--customers", "20", "--hours", "24",
              "--metrics-hours", "0.2", "--format", "jsonl.gz"])
    for file in ("transactions.jsonl.gz", "metrics.jsonl.gz", "transactions_labels.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_records_parse_and_labels_point_at_real_events():
    samples = generate(3, 60, START, 48, 0.5)
    for event in samples.transactions:
        assert not hasattr(parse_transaction(json.dumps(event), 65536), "reason"), event
    for event in samples.metrics:
        assert not hasattr(parse_metric(json.dumps(event), 65536), "reason"), event
    ids = {e["transaction_id"] for e in samples.transactions}
    assert len(ids) == len(samples.transactions)
    assert {label["transaction_id"] for label in samples.transaction_labels} <= ids
    assert {label["pattern"] for label in samples.transaction_labels} == set(PATTERNS)
    share = len(samples.transaction_labels) / len(samples.transactions)
    assert 0.01 <= share <= 0.06, share


def test_fraud_follows_normal_history_and_metric_anomalies_skip_warm_up():
    samples = generate(5, 80, START, 48, 1.0)
    fraud = {label["transaction_id"] for label in samples.transaction_labels}
    seen = collections.Counter()
    for event in samples.transactions:  # the file is in time order
        if event["transaction_id"] in fraud:
            assert seen[event["customer_id"]] >= 10
        else:
            seen[event["customer_id"]] += 1
    times = sorted({e["timestamp"] for e in samples.metrics})
    warm_up_end = times[int(len(times) * 0.15)]
    assert samples.metric_labels
    assert all(label["timestamp"] > warm_up_end for label in samples.metric_labels)


def test_parquet_and_shards_hold_the_same_records(tmp_path):
    main(["generate", "--out", str(tmp_path / "p"), "--customers", "15", "--hours", "24",
          "--metrics-hours", "0.1", "--format", "parquet", "--shards", "3"])
    main(["generate", "--out", str(tmp_path / "j"), "--customers", "15", "--hours", "24",
          "--metrics-hours", "0.1"])
    whole = [json.loads(line) for line in open(tmp_path / "j" / "metrics.jsonl")]
    sharded = pq.read_table([str(f) for f in sorted((tmp_path / "p").glob("metrics-*"))])
    assert sorted(map(json.dumps, sharded.to_pylist())) == sorted(map(json.dumps, whole))


def test_start_is_parsed_as_utc():
    assert parse_start("2026-01-05T01:00:00+01:00") == datetime.fromisoformat(
        "2026-01-05T00:00:00+00:00")
