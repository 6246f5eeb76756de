"""Parsing and validation of raw event payloads. Pure: no Beam.

Every payload becomes either a record or a `ParseFailure` whose reason says exactly what is
wrong, so the pipeline can dead-letter it with the original text and lose nothing. Nothing a
payload holds may raise out of here: one bad record must never fail a bundle.
"""
from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from realtime_ai.core.records import MetricRecord, Transaction

MAX_TEXT_LENGTH = 256
MAX_METADATA_ENTRIES = 32
TRANSACTION_TEXT_FIELDS = ("transaction_id", "customer_id", "currency", "merchant",
                           "merchant_category", "country", "channel")
TRANSACTION_FIELDS = (*TRANSACTION_TEXT_FIELDS, "amount", "timestamp")
METRIC_FIELDS = ("metric", "value", "timestamp")
# Epoch numbers above this are milliseconds (1e11 s is in the year 5138).
EPOCH_MILLIS_ABOVE = 1e11
# Larger amounts are dead-lettered rather than scored: no payment in any currency comes near
# it, and the customer statistics (core/features.py) square amounts, so one amount above
# ~1.3e154 makes that customer's variance infinite and every later z-score ~0 until the
# state expires, and near-maximum amounts overflow the last-hour sum. Below it every
# statistic stays finite for any number of transactions (a sum of squares <= count * 1e200).
MAX_AMOUNT = 1e100
# Event times outside these are dead-lettered: windows are computed as datetimes (bounds,
# grace), which stop at the years 1 and 9999, so a window at either end overflows and fails
# the job. A millennium of room each side is more than any window or grace can take.
EARLIEST_EVENT_TIME = datetime(1000, 1, 1, tzinfo=timezone.utc)
LATEST_EVENT_TIME = datetime(9000, 1, 1, tzinfo=timezone.utc)
# File sources decode bytes that are not UTF-8 with errors="replace"; this character is how
# such a payload arrives here.
REPLACEMENT_CHARACTER = "\ufffd"
PREVIEW_LENGTH = 64

_JSON_TYPE_NAMES = {str: "string", int: "number", float: "number", bool: "boolean",
                    list: "array", dict: "object", type(None): "null"}


@dataclasses.dataclass(frozen=True)
class ParseFailure:
    reason: str


class _Invalid(Exception):
    """Internal: carries the reason out of nested checks; never leaves this module."""


def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _preview(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= PREVIEW_LENGTH else text[:PREVIEW_LENGTH] + "..."


def _load_object(payload: str, max_bytes: int, required: tuple[str, ...]) -> dict:
    size = len(payload.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise _Invalid(f"oversized record: {size} bytes > {max_bytes}")
    if REPLACEMENT_CHARACTER in payload:
        raise _Invalid("invalid encoding: the record is not valid UTF-8")
    try:
        value = json.loads(payload)
    except json.JSONDecodeError as error:
        raise _Invalid(f"invalid JSON: {error.msg} at position {error.pos}") from None
    except ValueError as error:  # e.g. an integer longer than Python's digit limit
        raise _Invalid(f"invalid JSON: {error}") from None
    except RecursionError:
        raise _Invalid("invalid JSON: nested too deeply") from None
    if not isinstance(value, dict):
        raise _Invalid(f"not a JSON object but {_json_type(value)}")
    missing = [name for name in required if name not in value]
    if missing:
        raise _Invalid(f"missing field{'s' if len(missing) > 1 else ''} "
                       + ", ".join(f"'{name}'" for name in missing))
    return value


def _clean_text(value: str, what: str) -> str:
    """Trimmed, non-empty, short text that Parquet can store (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Invalid(f"{what} is not valid Unicode text") from None
    value = value.strip()
    if not value:
        raise _Invalid(f"{what} is empty")
    if len(value) > MAX_TEXT_LENGTH:
        raise _Invalid(f"{what} is longer than {MAX_TEXT_LENGTH} characters")
    return value


def _text(obj: dict, name: str) -> str:
    value = obj[name]
    if not isinstance(value, str):
        raise _Invalid(f"field '{name}' must be a string, got {_json_type(value)}")
    return _clean_text(value, f"field '{name}'")


def _number(obj: dict, name: str) -> float:
    value = obj[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"field '{name}' must be a number, got {_json_type(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        raise _Invalid(f"field '{name}' is out of range") from None
    if not math.isfinite(number):
        raise _Invalid(f"field '{name}' is not finite: {number}")
    return number


def _from_epoch(value: int | float) -> datetime:
    try:
        seconds = float(value)
        if not math.isfinite(seconds):
            raise _Invalid(f"field 'timestamp' is not finite: {seconds}")
        if abs(seconds) > EPOCH_MILLIS_ABOVE:
            seconds /= 1000.0
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise _Invalid(f"field 'timestamp' is out of range: {_preview(value)}") from None


def _from_iso(value: str) -> datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat knows offsets only
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"unparseable timestamp {_preview(value)}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # e.g. year 1 with a positive offset
        raise _Invalid(f"field 'timestamp' is out of range: {_preview(value)}") from None


def _event_time(value: Any) -> datetime:
    """ISO-8601 text (Z, offset, or naive = UTC) or epoch seconds/milliseconds -> aware UTC."""
    if isinstance(value, str):
        moment = _from_iso(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        moment = _from_epoch(value)
    else:
        raise _Invalid("field 'timestamp' must be ISO-8601 text or epoch seconds/milliseconds, "
                       f"got {_json_type(value)}")
    if not EARLIEST_EVENT_TIME <= moment < LATEST_EVENT_TIME:
        raise _Invalid(f"field 'timestamp' is out of range: {_preview(value)} (event times "
                       f"must be from {EARLIEST_EVENT_TIME.year} to before "
                       f"{LATEST_EVENT_TIME.year})")
    return moment


def _parse_transaction(obj: dict) -> Transaction:
    fields = {name: _text(obj, name) for name in TRANSACTION_TEXT_FIELDS}
    amount = _number(obj, "amount")
    if amount < 0:
        raise _Invalid(f"field 'amount' is negative: {amount}")
    if amount > MAX_AMOUNT:
        raise _Invalid(f"field 'amount' is out of range: {amount:g} > {MAX_AMOUNT:g}")
    return Transaction(amount=amount, event_time=_event_time(obj["timestamp"]), **fields)


def _metadata(obj: dict) -> tuple[tuple[str, str], ...]:
    raw = obj.get("metadata")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _Invalid(f"field 'metadata' must be an object, got {_json_type(raw)}")
    if len(raw) > MAX_METADATA_ENTRIES:
        raise _Invalid(f"field 'metadata' has more than {MAX_METADATA_ENTRIES} entries")
    pairs = []
    for key, value in raw.items():
        what = f"metadata {_preview(key)}"
        if value is None:  # null is as good as absent
            continue
        if isinstance(value, (dict, list)):
            raise _Invalid(f"{what} must be a scalar, got {_json_type(value)}")
        # JSON spelling for non-strings: true, 3, 1.5 (not Python's True)
        text = value if isinstance(value, str) else json.dumps(value)
        pairs.append((_clean_text(key, f"{what} key"), _clean_text(text, what)))
    return tuple(sorted(pairs))


def _parse_metric(obj: dict) -> MetricRecord:
    raw_time = obj["timestamp"]
    return MetricRecord(
        metric=_text(obj, "metric"),
        value=_number(obj, "value"),
        event_time=_event_time(raw_time),
        timestamp=raw_time if isinstance(raw_time, str) else str(raw_time),
        metadata=_metadata(obj),
    )


def parse_transaction(payload: str, max_bytes: int) -> Transaction | ParseFailure:
    try:
        return _parse_transaction(_load_object(payload, max_bytes, TRANSACTION_FIELDS))
    except _Invalid as invalid:
        return ParseFailure(str(invalid))


def parse_metric(payload: str, max_bytes: int) -> MetricRecord | ParseFailure:
    try:
        return _parse_metric(_load_object(payload, max_bytes, METRIC_FIELDS))
    except _Invalid as invalid:
        return ParseFailure(str(invalid))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, Decimal):  # Parquet decimal columns, typically amounts
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    # dates, times, durations...: their text; a required field of such a type is then
    # dead-lettered by the parser rather than failing the file
    return str(value)


def to_json_payload(row: dict) -> str:
    """A Parquet row as canonical JSON text (sorted keys, times as ISO-8601 Z)."""
    return json.dumps(row, sort_keys=True, default=_json_default)
