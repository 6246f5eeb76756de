"""What goes to the model: each task's input data, built from records. Pure: no Beam."""
from __future__ import annotations

import collections
import dataclasses
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from realtime_ai.core.keyed import to_micros
from realtime_ai.core.records import (
    FeaturedTransaction,
    PastTransaction,
    ScoredMetric,
    Transaction,
)
from realtime_ai.core.rows import iso

_TRANSACTION_FIELD_NAMES = ("transaction_id", "amount", "merchant", "merchant_category",
                            "country", "channel")
_transaction_field_values = operator.attrgetter(*_TRANSACTION_FIELD_NAMES)


def _transaction_fields(tx: Transaction | PastTransaction) -> dict:
    fields = dict(zip(_TRANSACTION_FIELD_NAMES, _transaction_field_values(tx), strict=True))
    fields["timestamp"] = iso(tx.event_time)
    return fields


def transaction_risk_data(featured: FeaturedTransaction) -> dict:
    tx = featured.transaction
    # No customer_id: the features already say how this customer behaves, and an identity
    # is neither evidence nor something a model provider needs.
    data = {"transaction": {**_transaction_fields(tx), "currency": tx.currency}}
    # Its fields are numbers, flags and text: a shallow copy of its attributes, not
    # dataclasses.asdict's deep one (a fifth of what asking the local model cost a payment)
    # or a getattr per field.
    data["features"] = dict(vars(featured.features))
    return data


def transaction_analysis_data(featured: FeaturedTransaction, assessment: Mapping[str, Any],
                              playbook: list[dict], past_alerts: Sequence[dict] = ()) -> dict:
    """`past_alerts`: similar alerts of an earlier run (retrieval.PastAlerts); the key is
    left out when there are none, so the request is the same as without --past_alerts."""
    data = transaction_risk_data(featured)
    data["fast_assessment"] = dict(assessment)
    data["history"] = [_transaction_fields(past) for past in featured.recent]
    data["playbook"] = playbook
    if past_alerts:
        data["past_alerts"] = list(past_alerts)
    return data


def metric_anomaly_data(scored: ScoredMetric, runbooks: list[dict]) -> dict:
    record = scored.record
    return {
        "metric": record.metric,
        "value": record.value,
        "timestamp": iso(record.event_time),
        "z_score": scored.score.z_score,
        "anomaly_score": scored.score.anomaly_score,
        "rolling_mean": scored.score.rolling_mean,
        "rolling_std": scored.score.rolling_std,
        "rolling_count": scored.score.rolling_count,
        "recent_values": list(scored.score.recent_values),
        "metadata": dict(record.metadata),
        "runbooks": runbooks,
    }


@dataclasses.dataclass(frozen=True)
class MetricSummary:
    """One metric's values within one dashboard window, order-independent."""

    metric: str
    count: int
    mean: float
    min: float
    max: float
    last: float
    anomalies: int
    max_anomaly_score: float


def _mean(values: list[float]) -> float:
    """The mean of finite values, always finite. Metric values are any finite float (the
    detector's statistics survive them, so a dashboard must too), and two near the float
    maximum overflow fsum; then the values are scaled down by a power of two (exact but for
    values near zero, which cannot matter beside ones this large) so their sum fits, and the
    mean is kept within [min, max] against the last rounding. Ordinary values take the
    exact path, so their figures do not change."""
    try:
        return math.fsum(values) / len(values)
    except OverflowError:
        scale = 2.0 ** len(values).bit_length()  # > len(values): the scaled sum is finite
        mean = math.fsum(v / scale for v in values) / len(values) * scale
        return min(max(mean, min(values)), max(values))


def window_entry(scored: ScoredMetric) -> tuple[str, int, float, bool, float]:
    """What a dashboard window's summary takes from one value: (metric, event time in micros,
    value, is_anomaly, anomaly_score), plain, so that Beam groups it without pickling."""
    record, score = scored.record, scored.score
    return (record.metric, to_micros(record.event_time), record.value, score.is_anomaly,
            score.anomaly_score)


def summarise_window(scored: Iterable[ScoredMetric]) -> tuple[MetricSummary, ...]:
    """Per-metric aggregates of one window, sorted so input order never changes the result."""
    return summarise_entries(window_entry(item) for item in scored)


def summarise_entries(entries: Iterable[tuple[str, int, float, bool, float]],
                      ) -> tuple[MetricSummary, ...]:
    """summarise_window of the values' `window_entry`s."""
    by_metric: dict[str, list[tuple[str, int, float, bool, float]]] = {}
    for entry in entries:
        by_metric.setdefault(entry[0], []).append(entry)
    summaries = []
    for metric in sorted(by_metric):
        # by (event time, value)
        items = sorted(by_metric[metric], key=lambda entry: (entry[1], entry[2]))
        values = [entry[2] for entry in items]
        summaries.append(MetricSummary(
            metric=metric, count=len(values), mean=round(_mean(values), 6),
            min=min(values), max=max(values), last=values[-1],
            anomalies=sum(entry[3] for entry in items),
            max_anomaly_score=round(max(entry[4] for entry in items), 6)))
    return tuple(summaries)


# The dashboard of the payments: one transaction insight per insight window (the fraud rate
# of the window). Metric dashboards are named by their values' metadata.
TRANSACTIONS_DASHBOARD = "transactions"
RISK_FACTORS_SHOWN = 3


@dataclasses.dataclass(frozen=True)
class TransactionSummary:
    """The payments of one insight window: how many, how many the fast model rated high risk
    (escalated: each raised an alert), and what those had most in common."""

    count: int
    escalations: int
    high_risk_share: float
    risk_factors: tuple[tuple[str, int], ...]  # (factor, escalated payments with it), top first


# What an escalated payment's features say, by factor name (rows.transaction_row's columns).
_RISK_FACTORS: tuple[tuple[str, Callable[[Mapping[str, Any]], bool]], ...] = (
    ("new country", lambda row: bool(row["new_country"])),
    ("new merchant category", lambda row: bool(row["new_merchant_category"])),
    ("another payment within the hour", lambda row: (row["velocity_1h"] or 0) >= 1),
    ("amount far above the customer's usual", lambda row: (row["amount_zscore"] or 0) >= 3),
)


def summarise_transactions(transactions: Sequence[tuple]) -> TransactionSummary:
    """The window's payments (`insight_transaction`s) in figures, order-independent."""
    count = len(transactions)
    escalated = [dict(zip(TRANSACTION_VALUE_FIELDS, item, strict=True))
                 for item in transactions if item[_ESCALATED]]
    factors = collections.Counter(
        name for row in escalated for name, applies in _RISK_FACTORS if applies(row))
    top = sorted(factors.items(), key=lambda item: (-item[1], item[0]))[:RISK_FACTORS_SHOWN]
    return TransactionSummary(count=count, escalations=len(escalated),
                              high_risk_share=round(len(escalated) / count, 6) if count else 0.0,
                              risk_factors=tuple(top))


@dataclasses.dataclass(frozen=True)
class DashboardWindow:
    """One dashboard's insight window: a metric dashboard's metrics, or (the transactions
    dashboard) the window's payments; and the ids of the alerts raised in it."""

    dashboard_id: str
    window_start: datetime
    window_end: datetime
    summaries: tuple[MetricSummary, ...]
    transactions: TransactionSummary | None = None
    alert_ids: tuple[str, ...] = ()  # sorted


# What the insight step takes of each value: a plain tuple of these fields. Beam groups
# tuples without pickling, and at about half the CPU of dicts, which spell out every field
# name in every value (a metric value each 10 s per metric); one that comes too late is
# dead-lettered with its field names.
METRIC_VALUE_FIELDS = ("dashboard_id", "metric", "event_micros", "value", "is_anomaly",
                       "anomaly_score")
TRANSACTION_VALUE_FIELDS = ("transaction_id", "escalated", "new_country",
                            "new_merchant_category", "velocity_1h", "amount_zscore")
ALERT_VALUE_FIELDS = ("alert_id", "kind", "subject")
_ESCALATED = TRANSACTION_VALUE_FIELDS.index("escalated")
_transaction_value = operator.itemgetter(*TRANSACTION_VALUE_FIELDS)
_alert_value = operator.itemgetter(*ALERT_VALUE_FIELDS)


def insight_metric_value(scored: ScoredMetric) -> tuple:
    """A metric value of a dashboard, as the insight step takes it: its dashboard, then its
    `window_entry`."""
    return (scored.record.dashboard_id, *window_entry(scored))


def insight_transaction(row: Mapping[str, Any]) -> tuple:
    """A transaction row (rows.transaction_row), as the insight step takes it."""
    return _transaction_value(row)


def insight_alert(alert: Mapping[str, Any]) -> tuple:
    """An alert row, as the insight step takes it."""
    return _alert_value(alert)


def dashboard_windows(window_start: datetime, window_end: datetime,
                      metric_values: Iterable[tuple], transactions: Iterable[tuple],
                      alerts: Iterable[tuple]) -> list[DashboardWindow]:
    """Every dashboard's window of one insight window, from what fell in it
    (`insight_metric_value`, `insight_transaction`, `insight_alert`): each metric dashboard's
    values, the payments (the transactions dashboard, when there were any), and the alerts
    raised, each linked to its dashboard: a metric's alert to the dashboard its values name
    (the alert itself does not say), a payment's to the transactions dashboard. Sorted by
    dashboard; input order never changes the result."""
    by_dashboard: dict[str, list[tuple]] = {}
    dashboard_of_metric: dict[str, str] = {}
    for item in metric_values:
        dashboard_id = item[0]
        if dashboard_id:
            entry = item[1:]  # its window_entry
            by_dashboard.setdefault(dashboard_id, []).append(entry)
            dashboard_of_metric[entry[0]] = dashboard_id
    transactions = list(transactions)
    alert_ids: dict[str, list[str]] = {}
    for alert_id, kind, subject in alerts:
        dashboard_id = (TRANSACTIONS_DASHBOARD if kind == "transaction"
                        else dashboard_of_metric.get(subject))
        if dashboard_id:
            alert_ids.setdefault(dashboard_id, []).append(alert_id)
    windows = [DashboardWindow(dashboard_id, window_start, window_end,
                               summarise_entries(entries),
                               alert_ids=tuple(sorted(alert_ids.get(dashboard_id, ()))))
               for dashboard_id, entries in by_dashboard.items()]
    if transactions:
        windows.append(DashboardWindow(
            TRANSACTIONS_DASHBOARD, window_start, window_end, (),
            transactions=summarise_transactions(transactions),
            alert_ids=tuple(sorted(alert_ids.get(TRANSACTIONS_DASHBOARD, ())))))
    return sorted(windows, key=lambda window: window.dashboard_id)


def is_unusual(window: DashboardWindow) -> bool:
    """Worth a model's insight: some metric had an anomaly, or some payment was escalated, in
    the window. A quiet window's insight says so without a model call (1,066 of the samples'
    1,080 metric windows)."""
    if window.transactions is not None and window.transactions.escalations:
        return True
    return any(summary.anomalies for summary in window.summaries)


def dashboard_insight_data(window: DashboardWindow) -> dict:
    data = {
        "dashboard_id": window.dashboard_id,
        "window_start": iso(window.window_start),
        "window_end": iso(window.window_end),
    }
    if window.transactions is None:
        data["metrics"] = [dataclasses.asdict(s) for s in window.summaries]
    else:
        summary = window.transactions
        data["transactions"] = {
            "count": summary.count, "escalations": summary.escalations,
            "high_risk_share": summary.high_risk_share,
            "risk_factors": {name: seen for name, seen in summary.risk_factors}}
    return data
