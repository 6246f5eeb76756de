"""Pure tests: every rejection reason, every accepted timestamp form, canonical JSON rows."""
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from realtime_ai.core.parsing import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    MAX_AMOUNT,
    MAX_METADATA_ENTRIES,
    ParseFailure,
    parse_metric,
    parse_transaction,
    to_json_payload,
)
from realtime_ai.core.records import MetricRecord, Transaction

MAX_BYTES = 65536  # the pipeline's default
GOOD = {"transaction_id": "tx-1", "customer_id": "c-1", "amount": 12.5, "currency": "EUR",
        "merchant": "shop", "merchant_category": "groceries", "country": "DE",
        "channel": "pos", "timestamp": "2026-01-05T10:00:00Z"}
TEN_AM = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)


def tx(**changes):
    return json.dumps({**GOOD, **changes})


def without(*names):
    return json.dumps({k: v for k, v in GOOD.items() if k not in names})


def metric(**fields):
    return json.dumps({"metric": "cpu", "value": 1.0, "timestamp": 0, **fields})


def test_valid_transaction_is_trimmed_and_ignores_unknown_fields():
    parsed = parse_transaction(tx(merchant="  shop  ", extra={"any": ["thing"]}), MAX_BYTES)
    assert parsed == Transaction("tx-1", "c-1", 12.5, "EUR", "shop", "groceries", "DE", "pos",
                                 TEN_AM)


def test_integer_and_zero_amounts_are_accepted_as_floats():
    assert parse_transaction(tx(amount=7), MAX_BYTES).amount == 7.0
    assert parse_transaction(tx(amount=0), MAX_BYTES).amount == 0.0


def test_amount_and_event_time_limits_are_inclusive_of_what_arithmetic_holds():
    assert parse_transaction(tx(amount=MAX_AMOUNT), MAX_BYTES).amount == MAX_AMOUNT
    assert parse_transaction(tx(amount=5e-324), MAX_BYTES).amount == 5e-324
    assert parse_transaction(tx(timestamp="1000-01-01T00:00:00Z"),
                             MAX_BYTES).event_time == EARLIEST_EVENT_TIME
    latest = LATEST_EVENT_TIME - timedelta(microseconds=1)
    assert parse_transaction(tx(timestamp=latest.isoformat()), MAX_BYTES).event_time == latest


@pytest.mark.parametrize("payload, reason", [
    ("{oops", "invalid JSON: Expecting property name enclosed in double quotes at position 1"),
    ("", "invalid JSON: Expecting value at position 0"),
    ('{"a": 1} trailing', "invalid JSON: Extra data"),
    ("[" * 5000 + "]" * 5000, "invalid JSON: nested too deeply"),
    ('{"amount": ' + "1" * 5000 + "}", "invalid JSON: Exceeds the limit (4300 digits)"),
    ("[1]", "not a JSON object but array"),
    ('"text"', "not a JSON object but string"),
    ("null", "not a JSON object but null"),
    (without("merchant"), "missing field 'merchant'"),
    (without("amount", "timestamp"), "missing fields 'amount', 'timestamp'"),
    (tx(merchant=None), "field 'merchant' must be a string, got null"),
    (tx(amount="12"), "field 'amount' must be a number, got string"),
    (tx(amount=True), "field 'amount' must be a number, got boolean"),
    (tx(amount=-1), "field 'amount' is negative: -1.0"),
    (tx(amount=float("nan")), "field 'amount' is not finite: nan"),
    (tx(amount=float("inf")), "field 'amount' is not finite: inf"),
    (tx(amount=1).replace('"amount": 1', '"amount": 1e400'), "field 'amount' is not finite"),
    (tx(amount=10 ** 400), "field 'amount' is out of range"),
    (tx(amount=1.7e308), "field 'amount' is out of range: 1.7e+308 > 1e+100"),
    (tx(amount=1e101), "field 'amount' is out of range: 1e+101 > 1e+100"),
    (tx(currency=""), "field 'currency' is empty"),
    (tx(currency="   "), "field 'currency' is empty"),
    (tx(currency=3), "field 'currency' must be a string, got number"),
    (tx(country=["DE"]), "field 'country' must be a string, got array"),
    (tx(merchant="x" * 257), "field 'merchant' is longer than 256 characters"),
    (tx(merchant="\udcff"), "field 'merchant' is not valid Unicode text"),
    (tx(timestamp="yesterday"), "unparseable timestamp 'yesterday'"),
    (tx(timestamp="2026-13-01T00:00:00Z"), "unparseable timestamp"),
    (tx(timestamp=[1]), "field 'timestamp' must be ISO-8601 text or epoch seconds/milliseconds, "
                        "got array"),
    (tx(timestamp=True), "field 'timestamp' must be ISO-8601 text or epoch seconds/milliseconds, "
                         "got boolean"),
    (tx(timestamp=None), "field 'timestamp' must be ISO-8601 text or epoch seconds/milliseconds, "
                         "got null"),
    (tx(timestamp=float("nan")), "field 'timestamp' is not finite"),
    (tx(timestamp=10 ** 400), "field 'timestamp' is out of range"),
    (tx(timestamp=1e18), "field 'timestamp' is out of range"),
    (tx(timestamp="0001-01-01T00:00:00+01:00"), "field 'timestamp' is out of range"),
    (tx(timestamp="9999-12-31T23:59:59Z"), "field 'timestamp' is out of range: "
                                           "'9999-12-31T23:59:59Z' (event times must be from "
                                           "1000 to before 9000)"),
    (tx(timestamp="0001-01-01T00:00:00Z"), "field 'timestamp' is out of range"),
    (tx(timestamp="0999-12-31T23:59:59Z"), "field 'timestamp' is out of range"),
    (tx(timestamp=-5e13), "field 'timestamp' is out of range: -50000000000000.0"),
])
def test_rejections_say_why(payload, reason):
    parsed = parse_transaction(payload, MAX_BYTES)
    assert isinstance(parsed, ParseFailure)
    assert parsed.reason.startswith(reason), parsed.reason


def test_size_is_counted_in_utf8_bytes_before_parsing():
    payload = tx(merchant="é" * 100)  # 100 characters, 200 bytes
    size = len(payload.encode("utf-8"))
    assert isinstance(parse_transaction(payload, size), Transaction)
    assert parse_transaction(payload, size - 1) == ParseFailure(
        f"oversized record: {size} bytes > {size - 1}")
    # oversized wins even over text that is not JSON at all
    assert parse_transaction("x" * 10, 9) == ParseFailure("oversized record: 10 bytes > 9")


def test_text_decoded_with_replacement_characters_is_an_encoding_failure():
    garbled = b'{"metric": "\xff"}'.decode("utf-8", errors="replace")
    assert parse_metric(garbled, MAX_BYTES) == ParseFailure(
        "invalid encoding: the record is not valid UTF-8")


def test_escaped_non_ascii_text_is_fine():
    parsed = parse_transaction(tx(merchant="Café Ñ"), MAX_BYTES)  # json.dumps escapes it
    assert parsed.merchant == "Café Ñ"


@pytest.mark.parametrize("stamp, expected", [
    ("2026-01-05T10:00:00Z", TEN_AM),
    ("2026-01-05T10:00:00z", TEN_AM),
    ("2026-01-05T12:00:00+02:00", TEN_AM),
    ("2026-01-05T05:30:00-04:30", TEN_AM),
    ("2026-01-05 10:00:00", TEN_AM),
    ("2014-07-01 00:00:00", datetime(2014, 7, 1, tzinfo=timezone.utc)),
    ("2026-01-05T10:00:00.250Z", TEN_AM + timedelta(milliseconds=250)),
    (" 2026-01-05T10:00:00Z ", TEN_AM),
    (1767607200, TEN_AM),
    (1767607200.5, TEN_AM + timedelta(milliseconds=500)),
    (1767607200000, TEN_AM),
    (1767607200250, TEN_AM + timedelta(milliseconds=250)),
    (0, datetime(1970, 1, 1, tzinfo=timezone.utc)),
])
def test_timestamp_forms_become_aware_utc_and_the_text_is_kept(stamp, expected):
    parsed = parse_metric(metric(timestamp=stamp), MAX_BYTES)
    assert isinstance(parsed, MetricRecord)
    assert parsed.event_time == expected
    assert parsed.event_time.tzinfo == timezone.utc
    assert parsed.timestamp == str(stamp)


def test_metric_values_may_be_negative_but_must_be_finite_numbers():
    assert parse_metric(metric(value=-1.5), MAX_BYTES).value == -1.5
    assert parse_metric(metric(value=float("-inf")), MAX_BYTES) == ParseFailure(
        "field 'value' is not finite: -inf")
    assert parse_metric(metric(value="1"), MAX_BYTES) == ParseFailure(
        "field 'value' must be a number, got string")
    assert parse_metric(metric(metric=""), MAX_BYTES) == ParseFailure("field 'metric' is empty")
    assert parse_metric('{"value": 1}', MAX_BYTES) == ParseFailure(
        "missing fields 'metric', 'timestamp'")


def test_metadata_is_optional_sorted_text_in_json_spelling():
    assert parse_metric(metric(), MAX_BYTES).metadata == ()
    assert parse_metric(metric(metadata=None), MAX_BYTES).metadata == ()
    parsed = parse_metric(metric(metadata={"service": " api ", "host": "h", "dashboard_id": "d",
                                           "n": 3, "ratio": 0.5, "up": True, "gone": None}),
                          MAX_BYTES)
    assert parsed.metadata == (("dashboard_id", "d"), ("host", "h"), ("n", "3"),
                               ("ratio", "0.5"), ("service", "api"), ("up", "true"))
    assert parsed.dashboard_id == "d"
    assert parse_metric(metric(metadata={"host": "h"}), MAX_BYTES).dashboard_id is None


@pytest.mark.parametrize("metadata, reason", [
    ({"tags": ["a"]}, "metadata 'tags' must be a scalar, got array"),
    ({"where": {"dc": 1}}, "metadata 'where' must be a scalar, got object"),
    ("dash-1", "field 'metadata' must be an object, got string"),
    ({"host": ""}, "metadata 'host' is empty"),
    ({"host": "h" * 257}, "metadata 'host' is longer than 256 characters"),
    ({"": "x"}, "metadata '' key is empty"),
    ({f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES + 1)},
     f"field 'metadata' has more than {MAX_METADATA_ENTRIES} entries"),
])
def test_metadata_rejections_say_why(metadata, reason):
    assert parse_metric(metric(metadata=metadata), MAX_BYTES) == ParseFailure(reason)


def test_parquet_rows_render_as_canonical_json():
    row = {"b": 1, "a": datetime(2026, 1, 5, 12, tzinfo=timezone(timedelta(hours=2))),
           "naive": datetime(2026, 1, 5, 10, 0, 0, 5), "day": date(2026, 1, 5),
           "amount": Decimal("12.50"), "raw": b"\xffok", "wait": timedelta(seconds=3),
           "nested": {"z": None, "y": [1.5]}}
    assert to_json_payload(row) == (
        '{"a": "2026-01-05T10:00:00Z", "amount": 12.5, "b": 1, "day": "2026-01-05", '
        '"naive": "2026-01-05T10:00:00.000005Z", "nested": {"y": [1.5], "z": null}, '
        '"raw": "\\ufffdok", "wait": "0:00:03"}')


def test_a_transaction_row_from_parquet_parses_back_to_the_same_transaction():
    row = {**GOOD, "timestamp": TEN_AM, "amount": Decimal("12.50")}
    assert parse_transaction(to_json_payload(row), MAX_BYTES) == parse_transaction(
        tx(), MAX_BYTES)
