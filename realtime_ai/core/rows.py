"""What comes out: output rows (matching the schemas in realtime_ai.core.records), alerts with
deterministic ids (a re-run or a replay yields the same alert_id for the same event) and dead
letters. Pure: no Beam.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from realtime_ai.core.records import DeadLetter, FeaturedTransaction, ScoredMetric
from realtime_ai.llm.base import LlmResult

if TYPE_CHECKING:
    from realtime_ai.core.model_inputs import DashboardWindow

ALERT_SEVERITIES = ("high", "critical")

# One output row: column name -> value, as the dataset's schema in core/records.py has it.
Row = dict[str, Any]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def answer_json(answer: Mapping[str, Any] | None) -> str | None:
    return None if answer is None else json.dumps(answer, sort_keys=True)


def transaction_row(featured: FeaturedTransaction, risk: LlmResult, threshold: float,
                    analysis: LlmResult | None) -> dict:
    tx, features = featured.transaction, featured.features
    models = [risk.model]
    if analysis is not None:
        models.append(f"{analysis.model} (deep p95 over budget)" if analysis.routed
                      else f"{analysis.model} (deep over budget)" if analysis.fell_back
                      else analysis.model)
    answers = [risk] if analysis is None else [risk, analysis]
    return {
        "transaction_id": tx.transaction_id,
        "customer_id": tx.customer_id,
        "event_time": tx.event_time,
        "amount": tx.amount,
        "currency": tx.currency,
        "merchant": tx.merchant,
        "merchant_category": tx.merchant_category,
        "country": tx.country,
        "channel": tx.channel,
        "amount_zscore": features.amount_zscore,
        "velocity_1h": features.velocity_1h,
        "new_country": features.new_country,
        "new_merchant_category": features.new_merchant_category,
        "risk_score": float(risk.answer["risk_score"]),
        "reason": risk.answer["reason"],
        "escalated": is_high_risk(risk, threshold),
        "analysis": answer_json(analysis.answer if analysis else None),
        "model": "+".join(dict.fromkeys(models)),
        "llm_latency_ms": risk.latency_ms + (analysis.latency_ms if analysis else 0.0),
        "prompt_version": prompt_versions(answers),
    }


def prompt_versions(answers: list[LlmResult | None]) -> str | None:
    """The prompt version of each answer, in the order of the model column, '+'-joined; None
    when no answer came from a prompt (the local rules model, or no answer)."""
    versions = [a.prompt_version for a in answers if a is not None and a.prompt_version]
    return "+".join(versions) or None


def is_high_risk(risk: LlmResult, threshold: float) -> bool:
    return float(risk.answer["risk_score"]) > threshold


def metric_row(scored: ScoredMetric, explanation: LlmResult | None) -> dict:
    record = scored.record
    return {
        "metric": record.metric,
        "event_time": record.event_time,
        "timestamp": record.timestamp,
        "value": record.value,
        "z_score": scored.score.z_score,
        "anomaly_score": scored.score.anomaly_score,
        "is_anomaly": scored.is_anomaly,
        "analysis": answer_json(explanation.answer if explanation else None),
        "dashboard_id": record.dashboard_id,
        "model": explanation.model if explanation else None,
        "llm_latency_ms": explanation.latency_ms if explanation else None,
        "prompt_version": prompt_versions([explanation]),
    }


def insight_row(window: DashboardWindow, insight: LlmResult | None) -> dict:
    """The model's insight on a window, or (None) a window with nothing unusual: a plain
    statement, no model call made (see model_inputs.is_unusual)."""
    payments = window.transactions
    row = {
        "dashboard_id": window.dashboard_id,
        "window_start": window.window_start,
        "window_end": window.window_end,
        "insight": insight.answer["insight"] if insight else quiet_window_insight(window),
        "priority": insight.answer["priority"] if insight else "low",
        "metric_count": len(window.summaries),
        "alert_ids": list(window.alert_ids),
        "transaction_count": payments.count if payments else None,
        "escalations": payments.escalations if payments else None,
        "high_risk_share": payments.high_risk_share if payments else None,
        "risk_factors": [name for name, _ in payments.risk_factors] if payments else None,
        "model": None,
        "llm_latency_ms": None,
        "prompt_version": None,
        "input_tokens": 0,
        "output_tokens": 0,
    }
    if insight is not None:
        row.update(model=insight.model, llm_latency_ms=insight.latency_ms,
                   prompt_version=prompt_versions([insight]),
                   input_tokens=insight.input_tokens, output_tokens=insight.output_tokens)
    return row


def quiet_window_insight(window: DashboardWindow) -> str:
    if window.transactions is not None:
        return (f"{window.transactions.count} payment(s), none rated high risk: no fraud "
                "signal in this window.")
    busiest = max(window.summaries, key=lambda s: (s.count, s.metric), default=None)
    if busiest is None:
        return "No metrics arrived in this window."
    return (f"All {len(window.summaries)} metrics normal: no anomaly in this window "
            f"({busiest.metric} averaged {busiest.mean:.4g}, max {busiest.max:.4g}).")


def dead_letter_row(dead: DeadLetter) -> dict:
    return dataclasses.asdict(dead)


def alert_id(kind: str, subject: str, event_time: datetime) -> str:
    """Deterministic: the same event always raises the same alert id (dedupe key downstream)."""
    digest = hashlib.sha256(f"{kind}|{subject}|{iso(event_time)}".encode()).hexdigest()
    return f"{kind[:3]}-{digest[:24]}"


def transaction_alert(featured: FeaturedTransaction, risk: LlmResult,
                      analysis: LlmResult | None) -> dict:
    """Every escalated transaction alerts; the deep analysis sets severity when it answered."""
    tx = featured.transaction
    if analysis is not None:
        severity = analysis.answer["severity"]
        summary = analysis.answer["summary"]
    else:
        severity = "high"
        summary = f"risk {float(risk.answer['risk_score']):.2f}: {risk.answer['reason']}"
    return {
        "alert_id": alert_id("transaction", tx.transaction_id, tx.event_time),
        "kind": "transaction",
        "subject": tx.transaction_id,
        "severity": severity,
        "event_time": tx.event_time,
        "summary": summary,
        "customer_id": tx.customer_id,
    }


def metric_alert(scored: ScoredMetric, explanation: LlmResult) -> dict | None:
    """An alert when the model rates the anomaly high or critical, else None."""
    severity = explanation.answer["severity"]
    if severity not in ALERT_SEVERITIES:
        return None
    record = scored.record
    causes = "; ".join(explanation.answer["possible_causes"][:3])
    return {
        "alert_id": alert_id("metric", record.metric, record.event_time),
        "kind": "metric",
        "subject": record.metric,
        "severity": severity,
        "event_time": record.event_time,
        "summary": (f"{record.metric}={record.value:g} (z={scored.score.z_score:.1f}, "
                    f"score={scored.score.anomaly_score:.2f}): {causes}. "
                    f"{explanation.answer['recommended_action']}"),
        "customer_id": None,
    }


def late_dead_letter(source: str, record: Any, seconds_behind: float,
                     allowed_lateness_seconds: float) -> DeadLetter:
    """A record that arrived after its key had been processed past it, beyond the lateness."""
    payload = json.dumps(dataclasses.asdict(record), sort_keys=True, default=json_value)
    return DeadLetter(source, payload,
                      f"late: {seconds_behind:.0f} s behind what was already processed for "
                      f"its key (allowed lateness {allowed_lateness_seconds:.0f} s)")


LATE_FOR_INSIGHT = "late for insight window"


def late_for_insight_dead_letter(value: Any, window_start: datetime,
                                 window_end: datetime) -> DeadLetter:
    """A value (scored metric, transaction row or alert) that reached the insight step after
    its window's insight was made: its own row is written, the insight misses it."""
    fields = value if isinstance(value, Mapping) else dataclasses.asdict(value)
    return DeadLetter("insights", json.dumps(fields, sort_keys=True, default=json_value),
                      f"{LATE_FOR_INSIGHT} {iso(window_start)} to {iso(window_end)}: it came "
                      "after the window's insight was made")


def json_value(value: Any) -> Any:
    """json.dumps' default for our records: times as ISO-8601 Z."""
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def merged_by_key(kept: list[Row], new: list[Row], key_columns: tuple[str, ...] | None
                  ) -> list[Row]:
    """`kept` rows whose key no row of `new` has, then `new`: a row's key is its
    `key_columns`, or the whole row when there are none."""
    def key(row: Row):
        if key_columns is None:
            return repr(sorted(row.items()))
        return tuple(row[column] for column in key_columns)

    replaced = {key(row) for row in new}
    return [row for row in kept if key(row) not in replaced] + new
