"""What goes to the model: each task's input data, built from records. Pure: no Beam."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from realtime_ai.core.keyed import to_micros
from realtime_ai.core.records import FeaturedTransaction, PastTransaction, ScoredMetric, Transaction
from realtime_ai.core.rows import iso


def _transaction_fields(tx: Transaction | PastTransaction) -> dict:
    fields = {
        name: getattr(tx, name)
        for name in ("transaction_id", "amount", "merchant", "merchant_category", "country",
                     "channel")
    }
    fields["timestamp"] = iso(tx.event_time)
    return fields


def transaction_risk_data(featured: FeaturedTransaction) -> dict:
    tx = featured.transaction
    # No customer_id: the features already say how this customer behaves, and an identity
    # is neither evidence nor something a model provider needs.
    data = {"transaction": {**_transaction_fields(tx), "currency": tx.currency}}
    data["features"] = dataclasses.asdict(featured.features)
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


@dataclasses.dataclass(frozen=True)
class DashboardWindow:
    """One dashboard's metrics in one insight window."""

    dashboard_id: str
    window_start: datetime
    window_end: datetime
    summaries: tuple[MetricSummary, ...]


def is_unusual(window: DashboardWindow) -> bool:
    """Worth a model's insight: some metric had an anomaly in the window. A quiet window's
    insight says so without a model call (1,066 of the samples' 1,080 windows)."""
    return any(summary.anomalies for summary in window.summaries)


def dashboard_insight_data(window: DashboardWindow) -> dict:
    return {
        "dashboard_id": window.dashboard_id,
        "window_start": iso(window.window_start),
        "window_end": iso(window.window_end),
        "metrics": [dataclasses.asdict(s) for s in window.summaries],
    }
