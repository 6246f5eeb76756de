"""ParseTransactions / ParseMetrics on the DirectRunner: every payload comes out exactly once,
valid ones at their event time, the rest as counted dead letters with the original text."""
import json
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from realtime_ai.core.records import DeadLetter
from realtime_ai.io.files import ReadEventPayloads
from realtime_ai.transforms.parse import ParseMetrics, ParseTransactions

MAX_BYTES = 1024
GOOD = {"transaction_id": "tx-1", "customer_id": "c-1", "amount": 12.5, "currency": "EUR",
        "merchant": "shop", "merchant_category": "groceries", "country": "DE",
        "channel": "pos", "timestamp": "2026-01-05T10:00:00Z"}
TEN_AM = datetime(2026, 1, 5, 10, tzinfo=timezone.utc).timestamp()


def tx(**changes) -> str:
    return json.dumps({**GOOD, **changes})


VALID = [tx(), tx(transaction_id="tx-2", timestamp=TEN_AM + 60)]
INVALID = {  # payload -> the start of its reason
    "{not json": "invalid JSON",
    json.dumps({k: v for k, v in GOOD.items() if k != "merchant"}): "missing field 'merchant'",
    tx(amount="12.5"): "field 'amount' must be a number",
    tx(amount=float("nan")): "field 'amount' is not finite",
    tx(amount=float("inf")): "field 'amount' is not finite",
    tx(amount=-3): "field 'amount' is negative",
    tx(timestamp="soon"): "unparseable timestamp",
    tx(merchant="m" * MAX_BYTES): "oversized record",
}


def _event_seconds(record, stamp=beam.DoFn.TimestampParam):
    return record.transaction_id, stamp.micros / 1e6


def _explained(expected: dict[str, str]):
    """DeadLetter -> (source, payload, expected reason) when its error starts with that
    reason; the letter itself otherwise, so a mismatch shows in the assertion."""
    def explain(dead: DeadLetter):
        reason = expected.get(dead.payload, "")
        return (dead.source, dead.payload, reason) if dead.error.startswith(reason) else dead
    return explain


def _counters(result) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace("realtime_ai"))
    return {c.key.metric.name: c.committed for c in query["counters"]}


def test_transactions_split_into_timestamped_records_and_dead_letters():
    payloads = VALID + list(INVALID)
    p = TestPipeline(runner="DirectRunner")
    parsed = p | beam.Create(payloads) | ParseTransactions(MAX_BYTES)
    assert_that(parsed.valid | "EventTimes" >> beam.Map(_event_seconds),
                equal_to([("tx-1", TEN_AM), ("tx-2", TEN_AM + 60)]), label="Valid")
    assert_that(parsed.dead_letter | "Reasons" >> beam.Map(_explained(INVALID)),
                equal_to([("transactions", payload, reason)
                          for payload, reason in INVALID.items()]), label="Dead")
    result = p.run()
    result.wait_until_finish()
    counters = _counters(result)
    assert counters["transactions_parsed"] == len(VALID)
    assert counters["transactions_dead_lettered"] == len(INVALID)
    assert counters["transactions_parsed"] + counters["transactions_dead_lettered"] == len(
        payloads)


def test_metrics_keep_their_text_and_dead_letter_their_own_source():
    good = json.dumps({"metric": "cpu", "value": -2, "timestamp": "2026-01-05 10:00:00",
                       "metadata": {"dashboard_id": "d1"}})
    bad = json.dumps({"metric": "cpu", "value": True, "timestamp": 0})
    with TestPipeline(runner="DirectRunner") as p:
        parsed = p | beam.Create([good, bad]) | ParseMetrics(MAX_BYTES)
        assert_that(parsed.valid | "Fields" >> beam.Map(
                        lambda r, t=beam.DoFn.TimestampParam: (
                            r.metric, r.value, r.timestamp, r.dashboard_id, t.micros / 1e6)),
                    equal_to([("cpu", -2.0, "2026-01-05 10:00:00", "d1", TEN_AM)]),
                    label="Valid")
        assert_that(parsed.dead_letter, equal_to([
            DeadLetter("metrics", bad, "field 'value' must be a number, got boolean")]),
            label="Dead")


def test_a_file_with_bytes_that_are_not_utf8_reconciles(tmp_path):
    not_utf8 = tx(merchant="cafe").encode().replace(b"cafe", b"caf\xe9")
    garbled = not_utf8.decode("utf-8", errors="replace")
    lines = [payload.encode() for payload in VALID + list(INVALID)] + [not_utf8]
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    expected = {**INVALID, garbled: "invalid encoding: the record is not valid UTF-8"}
    with TestPipeline(runner="DirectRunner") as p:
        read = p | ReadEventPayloads(str(tmp_path / "*.jsonl"), "transactions")
        parsed = read.payloads | ParseTransactions(MAX_BYTES)
        assert_that(parsed.valid | "Ids" >> beam.Map(lambda r: r.transaction_id),
                    equal_to(["tx-1", "tx-2"]), label="Valid")
        assert_that(parsed.dead_letter | "Reasons" >> beam.Map(_explained(expected)),
                    equal_to([("transactions", payload, reason)
                              for payload, reason in expected.items()]), label="Dead")
