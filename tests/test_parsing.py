"""Pure tests: every rejection reason and every accepted timestamp form."""
import json
from datetime import datetime, timezone

import pytest

from realtime_ai.records import MetricRecord, Transaction
from realtime_ai.transforms.parsing import (
    ParseFailure,
    parse_metric,
    parse_transaction,
    to_json_payload,
)

GOOD = {"transaction_id": "tx-1", "customer_id": "c-1", "amount": 12.5, "currency": "EUR",
        "merchant": "shop", "merchant_category": "groceries", "country": "DE",
        "channel": "pos", "timestamp": "2026-01-05T10:00:00Z"}


def tx(**changes):
    return json.dumps({**GOOD, **changes})


def test_valid_transaction():
    parsed = parse_transaction(tx(extra="ignored"), 4096)
    assert isinstance(parsed, Transaction)
    assert parsed.amount == 12.5
    assert parsed.event_time == datetime(2026, 1, 5, 10, tzinfo=timezone.utc)


@pytest.mark.parametrize("payload, reason", [
    ("{oops", "invalid JSON"),
    ("[1]", "not a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "merchant"}), "missing field 'merchant'"),
    (tx(amount="12"), "must be a number"),
    (tx(amount=True), "must be a number"),
    (tx(amount=-1), "negative amount"),
    (tx(amount=1e400), "non-finite"),
    ('{"amount": NaN}', "non-finite"),
    (tx(currency=""), "is empty"),
    (tx(currency=3), "must be a string"),
    (tx(timestamp="yesterday"), "unparseable timestamp"),
    (tx(timestamp=[1]), "ISO-8601"),
    (tx(merchant="x" * 300), "longer than"),
    (tx(merchant="x" * 5000), "oversized record"),
])
def test_rejections_say_why(payload, reason):
    parsed = parse_transaction(payload, 4096)
    assert isinstance(parsed, ParseFailure)
    assert reason in parsed.reason


@pytest.mark.parametrize("stamp, expected", [
    ("2026-01-05T10:00:00Z", datetime(2026, 1, 5, 10, tzinfo=timezone.utc)),
    ("2026-01-05T12:00:00+02:00", datetime(2026, 1, 5, 10, tzinfo=timezone.utc)),
    ("2026-01-05 10:00:00", datetime(2026, 1, 5, 10, tzinfo=timezone.utc)),
    (1767607200, datetime(2026, 1, 5, 10, tzinfo=timezone.utc)),
    (1767607200000, datetime(2026, 1, 5, 10, tzinfo=timezone.utc)),
])
def test_timestamp_forms(stamp, expected):
    parsed = parse_metric(json.dumps({"metric": "m", "value": -1.5, "timestamp": stamp}), 4096)
    assert isinstance(parsed, MetricRecord)
    assert parsed.event_time == expected
    assert parsed.timestamp == str(stamp)


def test_metric_metadata_is_sorted_text_and_nested_values_rejected():
    ok = parse_metric(json.dumps({"metric": "m", "value": 1, "timestamp": 0,
                                  "metadata": {"host": "h", "dashboard_id": "d", "n": 3}}), 4096)
    assert ok.metadata == (("dashboard_id", "d"), ("host", "h"), ("n", "3"))
    assert ok.dashboard_id == "d"
    bad = parse_metric(json.dumps({"metric": "m", "value": 1, "timestamp": 0,
                                   "metadata": {"tags": ["a"]}}), 4096)
    assert isinstance(bad, ParseFailure) and "scalar" in bad.reason


def test_parquet_rows_render_as_canonical_json():
    row = {"b": 1, "a": datetime(2026, 1, 5, 10, tzinfo=timezone.utc)}
    assert to_json_payload(row) == '{"a": "2026-01-05T10:00:00Z", "b": 1}'
