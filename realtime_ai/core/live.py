"""What the live dashboard keeps of the pipeline's outputs, and the figures it shows. Pure: no
Beam, no web framework.

Outputs arrive as Pub/Sub messages (JSON bodies, see io/pubsub.py) or as rows of a batch run's
Parquet datasets; both become `LiveEvent`s. `LiveBoard` keeps the latest alerts and insights,
a short series per metric, and the figures of what it received: events per second, model
latency percentiles, model cost per minute, late and dead-lettered records.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from realtime_ai.core.model_inputs import TRANSACTIONS_DASHBOARD
from realtime_ai.core.parsing import ParseFailure, parse_metric
from realtime_ai.core.rows import LATE_FOR_INSIGHT, iso

# What kind of event a message or row is; the page and the websockets speak these names.
ALERT, INSIGHT, METRIC, TRANSACTION, DEAD_LETTER = (
    "alert", "insight", "metric", "transaction", "dead_letter")
# The Pub/Sub streams the dashboard can read, and the kind of event each carries.
STREAMS = {"alerts": ALERT, "insights": INSIGHT, "metrics": METRIC}

RECENT_KEPT = 100  # alerts and insights a page opened later starts with
SERIES_POINTS = 120  # values kept per metric for its sparkline
LATENCIES_KEPT = 2000  # model latencies the percentiles are computed over
RATE_SECONDS = 10.0  # events/s is averaged over this much wall-clock time
COST_SECONDS = 60.0  # cost per minute: what was spent in the last minute
SEEN_IDS_KEPT = 20_000  # ids remembered to drop redeliveries (Pub/Sub is at least once)
RECENT_ALERTS_ASKED = 10  # alerts a question is answered from
MAX_MESSAGE_BYTES = 1 << 20


class MalformedMessage(ValueError):
    """A message that is not an output of the pipeline: counted and skipped."""


@dataclasses.dataclass(frozen=True)
class ModelCall:
    model: str
    latency_ms: float
    input_tokens: int | None = None  # None: the row does not say
    output_tokens: int | None = None


@dataclasses.dataclass(frozen=True)
class LiveEvent:
    """One output of the pipeline as the dashboard sees it; `data` is JSON-ready."""

    kind: str
    key: str  # the same for a redelivery of the same output
    event_time: datetime
    dashboard_id: str | None
    data: Mapping[str, Any]
    calls: tuple[ModelCall, ...] = ()

    @property
    def is_anomaly(self) -> bool:
        return self.kind == METRIC and bool(self.data.get("is_anomaly"))

    def message(self) -> dict:
        """What a websocket sends for it."""
        return {"type": self.kind, "key": self.key, "dashboard_id": self.dashboard_id,
                **self.data}


def _json_ready(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _time(value: Any, field: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise MalformedMessage(f"'{field}' is not an ISO-8601 time: {value[:40]!r}") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    raise MalformedMessage(f"'{field}' is missing or not a time")


def _text(row: Mapping[str, Any], field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value:
        raise MalformedMessage(f"'{field}' is missing or not text")
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _calls(row: Mapping[str, Any]) -> tuple[ModelCall, ...]:
    """The model call(s) a row reports: `model` ("fast+deep" when two answered) and the
    latency of all of them together, attributed to the first."""
    model, latency = row.get("model"), _number(row.get("llm_latency_ms"))
    if not isinstance(model, str) or not model or latency is None:
        return ()
    names = model.split("+")
    tokens = [row.get("input_tokens"), row.get("output_tokens")]
    known = all(isinstance(t, int) and not isinstance(t, bool) for t in tokens)
    first = ModelCall(names[0], latency, *(tokens if known else (None, None)))
    return (first, *(ModelCall(name, 0.0) for name in names[1:]))


def _alert(row: Mapping[str, Any]) -> LiveEvent:
    data = {name: _json_ready(row.get(name))
            for name in ("alert_id", "kind", "subject", "severity", "summary")}
    for field in ("alert_id", "kind", "subject", "severity", "summary"):
        _text(row, field)
    moment = _time(row.get("event_time"), "event_time")
    data["event_time"] = iso(moment)
    data["explanation"] = _explanation(row.get("analysis"))
    return LiveEvent(ALERT, data["alert_id"], moment, None, data)


def _explanation(analysis: Any) -> str | None:
    """The model's reasoning behind an alert, when the row carries its analysis."""
    if not isinstance(analysis, str):
        return None
    try:
        answer = json.loads(analysis)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    parts = []
    if answer.get("fraud_pattern"):  # a transaction's deep analysis
        parts.append(f"pattern: {str(answer['fraud_pattern']).replace('_', ' ')}.")
    causes = answer.get("possible_causes")  # a metric anomaly's explanation
    if isinstance(causes, list) and causes:
        parts.append("possible causes: " + "; ".join(map(str, causes[:3])) + ".")
    if answer.get("recommended_action"):
        parts.append(str(answer["recommended_action"]))
    return " ".join(parts) or None


def _insight(row: Mapping[str, Any]) -> LiveEvent:
    dashboard_id = _text(row, "dashboard_id")
    start = _time(row.get("window_start"), "window_start")
    end = _time(row.get("window_end"), "window_end")
    data = {
        "window_start": iso(start), "window_end": iso(end),
        "insight": _text(row, "insight"),
        "priority": row.get("priority") if isinstance(row.get("priority"), str) else None,
        "metric_count": row.get("metric_count"),
        # the window's alerts, and the transactions dashboard's figures (null elsewhere)
        **{name: _json_ready(row.get(name)) for name in (
            "transaction_count", "escalations", "high_risk_share")},
        **{name: list(row[name]) if isinstance(row.get(name), (list, tuple)) else [] for name in
           ("alert_ids", "risk_factors")},
        "model": row.get("model"),
    }
    return LiveEvent(INSIGHT, f"{dashboard_id}|{iso(start)}", end, dashboard_id, data,
                     _calls(row))


def _metric(row: Mapping[str, Any]) -> LiveEvent:
    """A metrics/ row of the pipeline, or a metric record as the pipeline reads it."""
    if "event_time" in row:  # an output row: scored, with its anomaly verdict
        metric = _text(row, "metric")
        value = _number(row.get("value"))
        if value is None:
            raise MalformedMessage("'value' is missing or not a number")
        moment = _time(row["event_time"], "event_time")
        dashboard_id = row.get("dashboard_id") if isinstance(row.get("dashboard_id"), str) \
            else None
        is_anomaly = bool(row.get("is_anomaly"))
        explanation = _explanation(row.get("analysis"))
    else:
        record = parse_metric(json.dumps(row), MAX_MESSAGE_BYTES)
        if isinstance(record, ParseFailure):
            raise MalformedMessage(record.error)
        metric, value, moment = record.metric, record.value, record.event_time
        dashboard_id, is_anomaly, explanation = record.dashboard_id, False, None
    data = {"metric": metric, "value": value, "event_time": iso(moment),
            "is_anomaly": is_anomaly, "explanation": explanation}
    return LiveEvent(METRIC, f"{metric}|{iso(moment)}|{value!r}", moment, dashboard_id, data,
                     _calls(row))


def _transaction(row: Mapping[str, Any]) -> LiveEvent:
    transaction_id = _text(row, "transaction_id")
    moment = _time(row.get("event_time"), "event_time")
    return LiveEvent(TRANSACTION, transaction_id, moment, None,
                     {"transaction_id": transaction_id, "event_time": iso(moment)},
                     _calls(row))


_BUILDERS = {ALERT: _alert, INSIGHT: _insight, METRIC: _metric, TRANSACTION: _transaction}
# Output dataset name (a folder under --output) -> the kind of event its rows are; in the
# order a replay sends events of the same moment: a record before what was derived from it.
DATASET_KINDS = {"transactions": TRANSACTION, "metrics": METRIC, "insights": INSIGHT,
                 "alerts": ALERT}


def event_from_row(kind: str, row: Mapping[str, Any]) -> LiveEvent:
    """An output row (Parquet: times are datetimes) as an event, or MalformedMessage."""
    return _BUILDERS[kind](row)


def event_from_message(stream: str, data: bytes) -> LiveEvent:
    """A Pub/Sub message body of `stream` (see STREAMS) as an event, or MalformedMessage."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        row = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedMessage(f"not JSON: {error}") from None
    if not isinstance(row, dict):
        raise MalformedMessage("not a JSON object")
    return event_from_row(STREAMS[stream], row)


def is_late(dead_letter_row: Mapping[str, Any]) -> bool:
    """A dead letter for a record that came too late for its key (rows.late_dead_letter) or
    for its insight window (rows.late_for_insight_dead_letter)."""
    return str(dead_letter_row.get("error", "")).startswith(("late:", LATE_FOR_INSIGHT))


def percentile(values: list[float], p: float) -> float | None:
    """The p-th percentile (nearest rank) of `values`, None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


class LiveBoard:
    """Everything the dashboard shows, updated event by event. Not thread-safe: one caller.

    `now` arguments are wall-clock seconds: rates are of what the dashboard received."""

    def __init__(self, prices: Mapping[str, Mapping[str, float]]):
        self._prices = prices
        self.alerts: collections.deque[LiveEvent] = collections.deque(maxlen=RECENT_KEPT)
        self.insights: collections.deque[LiveEvent] = collections.deque(maxlen=RECENT_KEPT)
        self.anomalies: collections.deque[LiveEvent] = collections.deque(maxlen=RECENT_KEPT)
        self.series: dict[str, collections.deque[LiveEvent]] = {}
        self.metric_dashboards: dict[str, str] = {}  # metric -> its dashboard, as seen
        self._seen: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._arrivals: collections.deque[float] = collections.deque()
        self._latencies: collections.deque[float] = collections.deque(maxlen=LATENCIES_KEPT)
        self._spent: collections.deque[tuple[float, float]] = collections.deque()
        self.counts: collections.Counter = collections.Counter()  # events by kind
        self.malformed: collections.Counter = collections.Counter()  # by stream
        self.late = 0
        self.dead_lettered = 0

    def add(self, event: LiveEvent, now: float) -> bool:
        """Keeps the event; False for a redelivery of one already kept (then ignored)."""
        seen_key = (event.kind, event.key)
        if seen_key in self._seen:
            return False
        self._seen[seen_key] = None
        if len(self._seen) > SEEN_IDS_KEPT:
            self._seen.popitem(last=False)
        self.counts[event.kind] += 1
        self._forget_before(now)  # bounded even when nobody asks for the figures
        self._arrivals.append(now)
        for call in event.calls:
            self._latencies.append(call.latency_ms)
            cost = self.call_cost_usd(call)
            if cost:
                self._spent.append((now, cost))
        if event.kind == ALERT:
            self.alerts.append(event)
        elif event.kind == INSIGHT:
            self.insights.append(event)
        elif event.kind == METRIC:
            metric = event.data["metric"]
            if event.dashboard_id:
                self.metric_dashboards[metric] = event.dashboard_id
            self.series.setdefault(metric, collections.deque(maxlen=SERIES_POINTS)).append(event)
            if event.is_anomaly:
                self.anomalies.append(event)
        return True

    def add_dead_letter(self, row: Mapping[str, Any]) -> None:
        if is_late(row):
            self.late += 1
        else:
            self.dead_lettered += 1

    def call_cost_usd(self, call: ModelCall) -> float | None:
        """Estimated from the prices; None when the row gave no tokens or the model has none."""
        price = self._prices.get(call.model)
        if price is None or call.input_tokens is None or call.output_tokens is None:
            return None
        return (call.input_tokens * price["input"] + call.output_tokens * price["output"]) / 1e6

    def dashboard_of(self, event: LiveEvent) -> str | None:
        """Whose dashboard an event belongs to: a metric alert belongs to its metric's, a
        transaction alert to the transactions dashboard (its insights' fraud rate)."""
        if event.kind == ALERT and event.data.get("kind") == "metric":
            return self.metric_dashboards.get(event.data.get("subject"))
        if event.kind == ALERT and event.data.get("kind") == "transaction":
            return TRANSACTIONS_DASHBOARD
        return event.dashboard_id

    def dashboard_backlog(self, dashboard_id: str) -> list[LiveEvent]:
        """What a new websocket of one dashboard starts with, oldest first."""
        kept = [*self.alerts, *self.insights, *self.anomalies]
        return sorted((e for e in kept if self.dashboard_of(e) == dashboard_id),
                      key=lambda e: e.event_time)

    def page_backlog(self) -> list[LiveEvent]:
        """What a page opened later starts with: latest alerts, insights and series."""
        points = [point for series in self.series.values() for point in series]
        return sorted([*self.alerts, *self.insights, *points], key=lambda e: e.event_time)

    def _forget_before(self, now: float) -> None:
        while self._arrivals and self._arrivals[0] < now - RATE_SECONDS:
            self._arrivals.popleft()
        while self._spent and self._spent[0][0] < now - COST_SECONDS:
            self._spent.popleft()

    def stats(self, now: float) -> dict:
        self._forget_before(now)
        latencies = list(self._latencies)
        return {
            "type": "stats",
            "events_per_second": round(len(self._arrivals) / RATE_SECONDS, 2),
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p99_ms": percentile(latencies, 99),
            "cost_per_minute_usd": round(math.fsum(c for _, c in self._spent), 6),
            "events": dict(self.counts),
            "malformed": sum(self.malformed.values()),
            "late": self.late,
            "dead_lettered": self.dead_lettered,
        }

    def question_data(self) -> dict:
        """The latest window's data a question is answered from."""
        latest_end = max((e.event_time for e in self.insights), default=None)
        window = [e for e in self.insights if e.event_time == latest_end]
        return {
            "window_end": iso(latest_end) if latest_end else None,
            "insights": [{"dashboard_id": e.dashboard_id, "insight": e.data["insight"],
                          "priority": e.data["priority"]} for e in window],
            "recent_alerts": [
                {name: e.data[name] for name in ("severity", "kind", "subject", "summary",
                                                 "event_time")}
                for e in list(self.alerts)[-RECENT_ALERTS_ASKED:]][::-1],
            "metrics": {name: {"last": s[-1].data["value"],
                               "anomalies_shown": sum(p.is_anomaly for p in s)}
                        for name, s in sorted(self.series.items())},
        }


def replay_order(events: Iterable[LiveEvent]) -> list[LiveEvent]:
    """Events in event-time order; ties keep their order (stable)."""
    return sorted(events, key=lambda e: e.event_time)
