"""Dead letters that can go through the pipeline again (pipelines/redrive.py). Pure: no Beam.

A model failure's dead letter keeps the original record as a JSON line the parser accepts
(`payload`) and what the request was built from beyond the record (`context`: the customer's
features and recent history, or the detector's score), so a redrive asks the model the same
question without the original run's state; a failed dashboard insight keeps its window. A
dead letter of the parser whose payload is now a valid record (fixed by hand) goes through the
whole pipeline again; its features come from the redriven records of its customer alone.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from realtime_ai.core.model_inputs import DashboardWindow, MetricSummary, TransactionSummary
from realtime_ai.core.parsing import ParseFailure, parse_metric, parse_transaction
from realtime_ai.core.records import (
    FeaturedTransaction,
    MetricRecord,
    MetricScore,
    PastTransaction,
    ScoredMetric,
    Transaction,
    TransactionFeatures,
)
from realtime_ai.core.rows import iso, json_value
from realtime_ai.llm import base

# A redriven record was accepted once: only the parser's own checks apply, not the size cap.
NO_SIZE_LIMIT = 2**62
TRANSACTION_FAILURES = (f"llm:{base.TRANSACTION_RISK}", f"llm:{base.TRANSACTION_ANALYSIS}")
METRIC_FAILURE = f"llm:{base.METRIC_ANOMALY}"
INSIGHT_FAILURE = f"llm:{base.DASHBOARD_INSIGHT}"
TRANSACTIONS, METRICS = "transactions", "metrics"  # sources of the parser's dead letters


class Replayable(NamedTuple):
    """What a model failure's dead letter keeps (see the module's docstring)."""

    payload: str
    context: str | None


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=json_value)


def transaction_line(tx: Transaction) -> str:
    """The transaction as an input record: parse_transaction gives it back unchanged."""
    fields = dataclasses.asdict(tx)
    fields["timestamp"] = iso(fields.pop("event_time"))
    return _json(fields)


def metric_line(record: MetricRecord) -> str:
    """The metric value as an input record: parse_metric gives it back unchanged."""
    try:  # a timestamp that arrived as a number is kept as its text: a number again
        timestamp = json.loads(record.timestamp)
        timestamp = timestamp if isinstance(timestamp, (int, float)) else record.timestamp
    except ValueError:
        timestamp = record.timestamp
    line = {"metric": record.metric, "value": record.value, "timestamp": timestamp}
    if record.metadata:
        line["metadata"] = dict(record.metadata)
    return _json(line)


def featured_transaction(featured: FeaturedTransaction) -> Replayable:
    return Replayable(transaction_line(featured.transaction), _json({
        "features": dataclasses.asdict(featured.features),
        "recent": [dataclasses.asdict(past) for past in featured.recent]}))


def scored_metric(scored: ScoredMetric) -> Replayable:
    return Replayable(metric_line(scored.record), _json(dataclasses.asdict(scored.score)))


def dashboard_window(window: DashboardWindow) -> Replayable:
    return Replayable(_json(dataclasses.asdict(window)), None)


@dataclasses.dataclass(frozen=True)
class RedriveInputs:
    """Dead letters to send through the pipeline again, by the step they re-enter at."""

    transaction_lines: tuple[str, ...] = ()  # fixed by hand: parsed, featured, scored
    metric_lines: tuple[str, ...] = ()
    featured: tuple[FeaturedTransaction, ...] = ()  # model failures: scored again
    scored: tuple[ScoredMetric, ...] = ()  # anomalies explained again
    windows: tuple[DashboardWindow, ...] = ()  # insights asked again

    def __len__(self) -> int:
        return sum(len(getattr(self, field.name)) for field in dataclasses.fields(self))


@dataclasses.dataclass(frozen=True)
class RedrivePlan:
    inputs: RedriveInputs
    already_answered: int  # events with a complete row under the output already
    not_replayable: int  # payloads still invalid, or dead letters of an older format


def _transaction(payload: str) -> Transaction | None:
    parsed = parse_transaction(payload, NO_SIZE_LIMIT)
    return None if isinstance(parsed, ParseFailure) else parsed


def _metric(payload: str) -> MetricRecord | None:
    parsed = parse_metric(payload, NO_SIZE_LIMIT)
    return None if isinstance(parsed, ParseFailure) else parsed


def _featured(tx: Transaction, context: str) -> FeaturedTransaction:
    saved = json.loads(context)
    recent = tuple(PastTransaction(**{**past, "event_time": _time(past["event_time"])})
                   for past in saved["recent"])
    return FeaturedTransaction(tx, TransactionFeatures(**saved["features"]), recent)


def _window(payload: str) -> DashboardWindow:
    saved = json.loads(payload)
    payments = saved.get("transactions")
    if payments is not None:
        payments = TransactionSummary(**{**payments, "risk_factors": tuple(
            (name, count) for name, count in payments["risk_factors"])})
    return DashboardWindow(saved["dashboard_id"], _time(saved["window_start"]),
                           _time(saved["window_end"]),
                           tuple(MetricSummary(**s) for s in saved["summaries"]),
                           payments, tuple(saved.get("alert_ids", ())))


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def transaction_event(tx: Transaction) -> tuple:
    return (TRANSACTIONS, tx.transaction_id)


def metric_event(record: MetricRecord) -> tuple:
    return (METRICS, record.metric, record.timestamp)


def window_event(window: DashboardWindow) -> tuple:
    return ("insights", window.dashboard_id, iso(window.window_start))


def _redrive_item(row: Mapping[str, Any]) -> tuple[str, tuple, Any] | None:
    """(RedriveInputs field, event, value) of one dead letter, or None if not replayable."""
    source, payload, context = row["source"], row["payload"], row.get("context")
    try:
        if source in TRANSACTION_FAILURES and context:
            tx = _transaction(payload)
            if tx is not None:
                return "featured", transaction_event(tx), _featured(tx, context)
        elif source == METRIC_FAILURE and context:
            record = _metric(payload)
            if record is not None:
                score = json.loads(context)
                score["recent_values"] = tuple(score.get("recent_values", ()))
                return "scored", metric_event(record), ScoredMetric(record, MetricScore(**score))
        elif source == INSIGHT_FAILURE:
            window = _window(payload)
            return "windows", window_event(window), window
    except (ValueError, TypeError, KeyError):  # an older format, or edited out of shape
        return None
    if source == TRANSACTIONS and (tx := _transaction(payload)) is not None:
        return "transaction_lines", transaction_event(tx), payload
    if source == METRICS and (record := _metric(payload)) is not None:
        return "metric_lines", metric_event(record), payload
    return None


def answered_events(transactions: Iterable[Mapping], metrics: Iterable[Mapping],
                    insights: Iterable[Mapping]) -> set[tuple]:
    """Events whose output row is complete: escalated transactions with their analysis,
    anomalies with their explanation."""
    done = {(TRANSACTIONS, row["transaction_id"]) for row in transactions
            if not row["escalated"] or row["analysis"] is not None}
    done |= {(METRICS, row["metric"], row["timestamp"]) for row in metrics
             if not row["is_anomaly"] or row["analysis"] is not None}
    done |= {("insights", row["dashboard_id"], iso(row["window_start"])) for row in insights}
    return done


def plan_redrive(dead_letters: Iterable[Mapping[str, Any]], answered: set[tuple]) -> RedrivePlan:
    """What to send again: each replayable event once, unless already answered."""
    chosen: dict[str, list] = {field.name: [] for field in dataclasses.fields(RedriveInputs)}
    seen: set[tuple] = set()
    already = unreplayable = 0
    for row in dead_letters:
        item = _redrive_item(row)
        if not item:
            unreplayable += 1
            continue
        field, event, value = item
        if event in answered:
            already += 1
        elif event not in seen:
            seen.add(event)
            chosen[field].append(value)
    return RedrivePlan(RedriveInputs(**{k: tuple(v) for k, v in chosen.items()}), already,
                       unreplayable)
