"""Records that flow through the pipeline and the one Arrow schema of each output.

Pure: no Beam import. Sinks, tests and readers all use the schemas defined here, so a
column is named and typed in exactly one place.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime

import pyarrow as pa

from realtime_ai.core.keyed import from_micros, to_micros

_TIME = pa.timestamp("us", tz="UTC")


@dataclasses.dataclass(frozen=True)
class Transaction:
    """A validated payment transaction; `event_time` is timezone-aware UTC."""

    transaction_id: str
    customer_id: str
    amount: float
    currency: str
    merchant: str
    merchant_category: str
    country: str
    channel: str
    event_time: datetime


@dataclasses.dataclass(frozen=True)
class MetricRecord:
    """A validated metric value; `timestamp` is the text as it arrived (for NAB scoring)."""

    metric: str
    value: float
    event_time: datetime
    timestamp: str
    metadata: tuple[tuple[str, str], ...] = ()

    @property
    def dashboard_id(self) -> str | None:
        # the last pair of that name, as dict(self.metadata) would say, without building it
        for name, value in reversed(self.metadata):
            if name == "dashboard_id":
                return value
        return None

    @property
    def event_id(self) -> str:
        """The same for a value and its redeliveries (metric values carry no id of their own);
        the metric itself is the key it is deduplicated under."""
        return f"{self.timestamp}|{self.value!r}"


def transaction_to_plain(tx: Transaction) -> list:
    return [tx.transaction_id, tx.customer_id, tx.amount, tx.currency, tx.merchant,
            tx.merchant_category, tx.country, tx.channel, to_micros(tx.event_time)]


def transaction_from_plain(plain: list) -> Transaction:
    (transaction_id, customer_id, amount, currency, merchant, merchant_category, country,
     channel, micros) = plain
    return Transaction(transaction_id, customer_id, amount, currency, merchant,
                       merchant_category, country, channel, from_micros(micros))


def metric_to_plain(record: MetricRecord) -> list:
    return [record.metric, record.value, to_micros(record.event_time), record.timestamp,
            [list(pair) for pair in record.metadata]]


def metric_from_plain(plain: list) -> MetricRecord:
    metric, value, micros, timestamp, metadata = plain
    return MetricRecord(metric, value, from_micros(micros), timestamp,
                        tuple(map(tuple, metadata)))


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """Anything the pipeline could not process: where it failed, what it was, and why."""

    source: str
    payload: str  # the record as it came in, or (a model failure) as a JSON line (replay.py)
    error: str
    # a model failure: what its request was built from beyond the record (replay.py)
    context: str | None = None


@dataclasses.dataclass(frozen=True)
class TransactionFeatures:
    """What the customer's own history says about one transaction (history excludes it)."""

    history_count: int
    mean_amount: float
    std_amount: float
    amount_zscore: float
    velocity_1h: int
    amount_1h: float
    seconds_since_last: float | None
    new_country: bool
    new_merchant_category: bool
    last_country: str | None


@dataclasses.dataclass(frozen=True)
class PastTransaction:
    """The slice of an earlier transaction kept in per-customer history."""

    transaction_id: str
    amount: float
    merchant: str
    merchant_category: str
    country: str
    channel: str
    event_time: datetime


@dataclasses.dataclass(frozen=True)
class FeaturedTransaction:
    """A transaction with its features and the customer's recent history before it."""

    transaction: Transaction
    features: TransactionFeatures
    recent: tuple[PastTransaction, ...]


@dataclasses.dataclass(frozen=True)
class MetricScore:
    """What the per-metric statistics and detector say about one value."""

    z_score: float
    anomaly_score: float
    is_anomaly: bool
    rolling_mean: float
    rolling_std: float
    rolling_count: int
    # the metric's last values, oldest first, ending with this one (up to 20, within the
    # rolling window): set only for anomalies, which go to the model with them
    recent_values: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class ScoredMetric:
    """A metric value with its rolling statistics and anomaly verdict."""

    record: MetricRecord
    score: MetricScore

    @property
    def is_anomaly(self) -> bool:
        return self.score.is_anomaly


TRANSACTIONS_SCHEMA = pa.schema([
    ("transaction_id", pa.string()),
    ("customer_id", pa.string()),
    ("event_time", _TIME),
    ("amount", pa.float64()),
    ("currency", pa.string()),
    ("merchant", pa.string()),
    ("merchant_category", pa.string()),
    ("country", pa.string()),
    ("channel", pa.string()),
    ("amount_zscore", pa.float64()),
    ("velocity_1h", pa.int64()),
    ("new_country", pa.bool_()),
    ("new_merchant_category", pa.bool_()),
    ("risk_score", pa.float64()),
    ("reason", pa.string()),
    ("escalated", pa.bool_()),
    ("analysis", pa.string()),  # the deep model's JSON answer; null when not escalated
    ("model", pa.string()),  # who answered, e.g. "gpt-4o-mini" or "gpt-4o-mini+gpt-4o"
    ("llm_latency_ms", pa.float64()),  # time spent waiting for the answers of this row
    # the prompt version of each answer (llm/tasks.py PROMPT_VERSIONS), '+'-joined like model;
    # null when no prompt was sent (the local rules model)
    ("prompt_version", pa.string()),
])

METRICS_SCHEMA = pa.schema([
    ("metric", pa.string()),
    ("event_time", _TIME),
    ("timestamp", pa.string()),  # as received; NAB's score.py joins on it
    ("value", pa.float64()),
    ("z_score", pa.float64()),
    ("anomaly_score", pa.float64()),
    ("is_anomaly", pa.bool_()),
    ("analysis", pa.string()),  # the fast model's JSON answer; null when not an anomaly
    ("dashboard_id", pa.string()),
    ("model", pa.string()),
    ("llm_latency_ms", pa.float64()),
    ("prompt_version", pa.string()),
])

ALERTS_SCHEMA = pa.schema([
    ("alert_id", pa.string()),
    ("kind", pa.string()),  # "transaction" or "metric"
    ("subject", pa.string()),  # transaction_id or metric name
    ("severity", pa.string()),
    ("event_time", _TIME),
    ("summary", pa.string()),
    # a transaction alert's customer (null for a metric): --past_alerts ranks a customer's
    # own earlier alerts first
    ("customer_id", pa.string()),
])

INSIGHTS_SCHEMA = pa.schema([
    ("dashboard_id", pa.string()),
    ("window_start", _TIME),
    ("window_end", _TIME),
    ("insight", pa.string()),
    ("priority", pa.string()),  # low, medium or high
    ("metric_count", pa.int64()),
    ("model", pa.string()),  # null: nothing unusual in the window, no model was asked
    ("llm_latency_ms", pa.float64()),
    ("prompt_version", pa.string()),
    ("input_tokens", pa.int64()),  # of the model call (0 without one): its cost
    ("output_tokens", pa.int64()),
    ("alert_ids", pa.list_(pa.string())),  # the alerts raised in the window, of this dashboard
    # the transactions dashboard's figures (null on a metric dashboard): payments in the
    # window, how many were escalated (rated high risk), their share, and the risk factors
    # most common among the escalated, most common first
    ("transaction_count", pa.int64()),
    ("escalations", pa.int64()),
    ("high_risk_share", pa.float64()),
    ("risk_factors", pa.list_(pa.string())),
])

DEAD_LETTER_SCHEMA = pa.schema([
    ("source", pa.string()),
    ("payload", pa.string()),
    ("error", pa.string()),
    ("context", pa.string()),  # model failures: features and history, or the detector's score
])

# The shadow model's comparison (--shadow_fast_model), one row per sampled transaction:
# written only by runs that ask a shadow model, so it is not one of OUTPUT_SCHEMAS.
SHADOW_DATASET = "shadow"
SHADOW_SCHEMA = pa.schema([
    ("transaction_id", pa.string()),
    ("customer_id", pa.string()),
    ("event_time", _TIME),
    ("primary_model", pa.string()),  # the row's fast-tier model column (says when degraded)
    ("primary_risk", pa.float64()),
    ("primary_escalates", pa.bool_()),  # risk above --risk_threshold
    ("shadow_model", pa.string()),
    ("shadow_risk", pa.float64()),  # null: the shadow model gave no answer (see failure)
    ("shadow_escalates", pa.bool_()),
    ("risk_difference", pa.float64()),  # shadow_risk - primary_risk
    # both models answered (neither failed nor degraded to the local rules): the rows the
    # end-of-run summary compares
    ("compared", pa.bool_()),
    ("escalation_agrees", pa.bool_()),  # null unless compared
    ("failure", pa.string()),  # why the row is not compared; null when it is
    ("prompt_version", pa.string()),
    ("primary_latency_ms", pa.float64()),
    ("shadow_latency_ms", pa.float64()),
])

# What identifies a row of each dataset (the event it is about): a streaming window's file
# written again keeps the rows it had unless new ones of the same event replace them (see
# io/parquet.py). A dataset not named here is keyed by the whole row.
DATASET_KEYS = {
    "transactions": ("transaction_id",),
    "metrics": ("metric", "timestamp"),
    "alerts": ("alert_id",),
    "insights": ("dashboard_id", "window_start"),
    SHADOW_DATASET: ("transaction_id",),
}

# Output dataset name -> schema; the names are the folders under --output.
OUTPUT_SCHEMAS = {
    "transactions": TRANSACTIONS_SCHEMA,
    "metrics": METRICS_SCHEMA,
    "alerts": ALERTS_SCHEMA,
    "insights": INSIGHTS_SCHEMA,
    "dead_letter": DEAD_LETTER_SCHEMA,
}
