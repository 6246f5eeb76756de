"""Parsing and validation of raw event payloads. Pure: no Beam.

Every payload becomes either a record or a `ParseFailure` whose reason says exactly what is
wrong, so the pipeline can dead-letter it with the original text and lose nothing.
"""
from __future__ import annotations

import dataclasses
import json
import math
from datetime import date, datetime, timezone
from typing import Any

from realtime_ai.records import MetricRecord, Transaction

MAX_TEXT_LENGTH = 256
MAX_METADATA_ENTRIES = 32
TRANSACTION_TEXT_FIELDS = ("transaction_id", "customer_id", "currency", "merchant",
                           "merchant_category", "country", "channel")
# Epoch numbers above this are milliseconds (1e11 s is in the year 5138).
EPOCH_MILLIS_ABOVE = 1e11


@dataclasses.dataclass(frozen=True)
class ParseFailure:
    reason: str


class _Invalid(Exception):
    """Internal: carries the reason out of nested checks; never leaves this module."""


def _reject_constant(name: str) -> float:
    raise _Invalid(f"non-finite number {name}")


def _load_object(payload: str, max_bytes: int) -> dict:
    size = len(payload.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise _Invalid(f"oversized record: {size} bytes > {max_bytes}")
    try:
        value = json.loads(payload, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise _Invalid(f"invalid JSON: {error.msg} at position {error.pos}") from None
    if not isinstance(value, dict):
        raise _Invalid(f"not a JSON object but {type(value).__name__}")
    return value


def _require(obj: dict, name: str) -> Any:
    if name not in obj or obj[name] is None:
        raise _Invalid(f"missing field '{name}'")
    return obj[name]


def _text(obj: dict, name: str) -> str:
    value = _require(obj, name)
    if not isinstance(value, str):
        raise _Invalid(f"field '{name}' must be a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise _Invalid(f"field '{name}' is empty")
    if len(value) > MAX_TEXT_LENGTH:
        raise _Invalid(f"field '{name}' is longer than {MAX_TEXT_LENGTH} characters")
    return value


def _number(obj: dict, name: str) -> float:
    value = _require(obj, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(f"field '{name}' must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise _Invalid(f"field '{name}' is not finite")
    return value


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 text (Z, offset, or naive = UTC) or epoch seconds/milliseconds -> aware UTC."""
    if isinstance(value, bool):
        raise _Invalid("field 'timestamp' must be ISO-8601 text or epoch seconds, got bool")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise _Invalid("field 'timestamp' is not finite")
        seconds = value / 1000.0 if abs(value) > EPOCH_MILLIS_ABOVE else float(value)
        try:
            return datetime.fromtimestamp(seconds, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise _Invalid(f"field 'timestamp' is out of range: {value}") from None
    if not isinstance(value, str):
        raise _Invalid(f"field 'timestamp' must be ISO-8601 text, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _Invalid(f"unparseable timestamp {value[:64]!r}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _parse_transaction(obj: dict) -> Transaction:
    fields = {name: _text(obj, name) for name in TRANSACTION_TEXT_FIELDS}
    amount = _number(obj, "amount")
    if amount < 0:
        raise _Invalid(f"negative amount {amount}")
    return Transaction(amount=amount, event_time=parse_timestamp(_require(obj, "timestamp")),
                       **fields)


def _metadata(obj: dict) -> tuple[tuple[str, str], ...]:
    raw = obj.get("metadata")
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise _Invalid(f"field 'metadata' must be an object, got {type(raw).__name__}")
    if len(raw) > MAX_METADATA_ENTRIES:
        raise _Invalid(f"field 'metadata' has more than {MAX_METADATA_ENTRIES} entries")
    pairs = []
    for key, value in raw.items():
        if isinstance(value, (dict, list)):
            raise _Invalid(f"metadata '{key}' must be a scalar, got {type(value).__name__}")
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        pairs.append((str(key)[:MAX_TEXT_LENGTH], text[:MAX_TEXT_LENGTH]))
    return tuple(sorted(pairs))


def _parse_metric(obj: dict) -> MetricRecord:
    raw_time = _require(obj, "timestamp")
    return MetricRecord(
        metric=_text(obj, "metric"),
        value=_number(obj, "value"),
        event_time=parse_timestamp(raw_time),
        timestamp=raw_time if isinstance(raw_time, str) else str(raw_time),
        metadata=_metadata(obj),
    )


def parse_transaction(payload: str, max_bytes: int) -> Transaction | ParseFailure:
    try:
        return _parse_transaction(_load_object(payload, max_bytes))
    except _Invalid as invalid:
        return ParseFailure(str(invalid))


def parse_metric(payload: str, max_bytes: int) -> MetricRecord | ParseFailure:
    try:
        return _parse_metric(_load_object(payload, max_bytes))
    except _Invalid as invalid:
        return ParseFailure(str(invalid))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def to_json_payload(row: dict) -> str:
    """A Parquet row as canonical JSON text (sorted keys, times as ISO-8601 Z)."""
    return json.dumps(row, sort_keys=True, default=_json_default, allow_nan=True)
