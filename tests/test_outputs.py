"""Pure tests of model inputs, output rows and alerts."""
import dataclasses
import math
import random
import sys
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from realtime_ai.core import model_inputs, rows
from realtime_ai.core.features import CustomerProfile
from realtime_ai.core.records import (
    ALERTS_SCHEMA,
    INSIGHTS_SCHEMA,
    METRICS_SCHEMA,
    TRANSACTIONS_SCHEMA,
    MetricRecord,
    MetricScore,
    ScoredMetric,
    Transaction,
)
from realtime_ai.llm.base import LlmResult, Spend

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
RISK = LlmResult(answer={"risk_score": 0.93, "reason": "burst of small online payments"},
                 model="fast-m", latency_ms=3.0)
ANALYSIS = LlmResult(answer={"summary": "card testing", "fraud_pattern": "card_testing",
                             "severity": "critical", "recommended_action": "block card",
                             "playbook_ids": ["pb-1"]}, model="deep-m", latency_ms=9.0)


def _featured(i=1):
    profile = CustomerProfile(10)
    tx = Transaction(transaction_id=f"tx-{i}", customer_id="c1", amount=2.5, currency="EUR",
                     merchant="shop", merchant_category="online", country="DE",
                     channel="online", event_time=T0)
    return profile.advance(tx)


def _scored(metric="api.latency", minutes=0.0, value=1.0, anomaly=False, dashboard="d1"):
    record = MetricRecord(metric=metric, value=value,
                          event_time=T0 + timedelta(minutes=minutes), timestamp="t",
                          metadata=(("dashboard_id", dashboard),))
    return ScoredMetric(record, MetricScore(
        z_score=4.0 if anomaly else 0.1, anomaly_score=0.99 if anomaly else 0.1,
        is_anomaly=anomaly, rolling_mean=1.0, rolling_std=0.5, rolling_count=50))


def test_rows_fit_their_schemas():
    featured = _featured()
    tx_rows = [rows.transaction_row(featured, RISK, 0.8, ANALYSIS),
               rows.transaction_row(featured, RISK, 0.95, None)]
    table = pa.Table.from_pylist(tx_rows, schema=TRANSACTIONS_SCHEMA)
    assert table.column("escalated").to_pylist() == [True, False]
    assert table.column("model").to_pylist() == ["fast-m+deep-m", "fast-m"]
    explanation = LlmResult(answer={"is_real_anomaly": True, "possible_causes": ["deploy"],
                                    "recommended_action": "roll back", "severity": "high"},
                            model="fast-m", latency_ms=1.0)
    metric_rows = [rows.metric_row(_scored(anomaly=True), explanation),
                   rows.metric_row(_scored(), None)]
    assert pa.Table.from_pylist(metric_rows, schema=METRICS_SCHEMA).num_rows == 2
    alerts = [rows.transaction_alert(featured, RISK, ANALYSIS),
              rows.metric_alert(_scored(anomaly=True), explanation)]
    assert pa.Table.from_pylist(alerts, schema=ALERTS_SCHEMA).num_rows == 2
    window = model_inputs.DashboardWindow("d1", T0, T0 + timedelta(seconds=30),
                                     model_inputs.summarise_window([_scored()]))
    insight = LlmResult(answer={"insight": "all quiet", "priority": "low"}, model="fast-m",
                        latency_ms=1.0)
    assert pa.Table.from_pylist([rows.insight_row(window, insight)],
                                schema=INSIGHTS_SCHEMA).num_rows == 1


def test_alert_ids_are_deterministic_and_distinct():
    a = rows.alert_id("transaction", "tx-1", T0)
    assert a == rows.alert_id("transaction", "tx-1", T0)
    assert a != rows.alert_id("transaction", "tx-2", T0)
    assert a != rows.alert_id("metric", "tx-1", T0)


def test_transaction_alert_without_analysis_still_raises_high():
    alert = rows.transaction_alert(_featured(), RISK, None)
    assert alert["severity"] == "high"
    assert "0.93" in alert["summary"]


def test_metric_alert_only_for_high_or_critical():
    low = LlmResult(answer={"is_real_anomaly": False, "possible_causes": [],
                            "recommended_action": "none", "severity": "low"},
                    model="m", latency_ms=1.0)
    assert rows.metric_alert(_scored(anomaly=True), low) is None


def test_window_summary_does_not_depend_on_input_order():
    items = [_scored(metric=f"m{i % 3}", minutes=i / 10, value=0.1 * i, anomaly=i == 7)
             for i in range(30)]
    shuffled = list(items)
    random.Random(5).shuffle(shuffled)
    assert model_inputs.summarise_window(items) == model_inputs.summarise_window(shuffled)
    summary = {s.metric: s for s in model_inputs.summarise_window(items)}
    assert summary["m1"].anomalies == 1 and summary["m0"].anomalies == 0
    assert summary["m0"].count == 10


@pytest.mark.parametrize("values, mean", [
    ([1.7e308, 1.7e308], 1.7e308),  # fsum overflowed: the job ended with OverflowError
    ([sys.float_info.max] * 3, sys.float_info.max),
    ([sys.float_info.max] * 3 + [-sys.float_info.max], sys.float_info.max / 2),
    ([-1.7e308] * 5 + [5e-324], -1.7e308 / 6 * 5),
    ([1.0, 2.0, 4.0], 7 / 3),
])
def test_window_mean_of_any_finite_values_is_finite(values, mean):
    items = [_scored(minutes=i, value=v) for i, v in enumerate(values)]
    (summary,) = model_inputs.summarise_window(items)
    assert math.isfinite(summary.mean) and summary.mean == pytest.approx(mean, rel=1e-6)
    assert summary.min <= summary.mean <= summary.max


def test_analysis_data_carries_history_and_playbook():
    data = model_inputs.transaction_analysis_data(_featured(), RISK.answer,
                                             [{"id": "pb-1", "title": "t", "text": "x"}])
    assert data["transaction"]["timestamp"] == "2026-01-05T12:00:00Z"
    assert data["fast_assessment"]["risk_score"] == 0.93
    assert data["history"] == [] and data["playbook"][0]["id"] == "pb-1"


def test_fallback_is_visible_in_the_model_column():
    fallback = LlmResult(answer=ANALYSIS.answer, model="fast-m", latency_ms=400.0,
                         fell_back=True)
    row = rows.transaction_row(_featured(), RISK, 0.8, fallback)
    assert row["model"] == "fast-m+fast-m (deep over budget)"
    assert row["llm_latency_ms"] == 403.0
    routed = LlmResult(answer=ANALYSIS.answer, model="fast-m", latency_ms=4.0, routed=True)
    assert rows.transaction_row(_featured(), RISK, 0.8, routed)["model"] == (
        "fast-m+fast-m (deep p95 over budget)")


def test_rows_say_which_prompt_version_answered():
    risk = dataclasses.replace(RISK, prompt_version="aaaa1111")
    analysis = dataclasses.replace(ANALYSIS, prompt_version="bbbb2222")
    assert rows.transaction_row(_featured(), risk, 0.8, analysis)["prompt_version"] == (
        "aaaa1111+bbbb2222")
    assert rows.transaction_row(_featured(), risk, 0.8, None)["prompt_version"] == "aaaa1111"
    # no prompt behind the local rules model's answers
    assert rows.transaction_row(_featured(), RISK, 0.8, None)["prompt_version"] is None
    explanation = LlmResult(answer={"is_real_anomaly": True, "possible_causes": [],
                                    "recommended_action": "", "severity": "low"},
                            model="fast-m", latency_ms=1.0, prompt_version="cccc3333")
    assert rows.metric_row(_scored(anomaly=True), explanation)["prompt_version"] == "cccc3333"
    assert rows.metric_row(_scored(), None)["prompt_version"] is None


def test_insight_keeps_priority_and_a_quiet_window_needs_no_model():
    quiet = model_inputs.DashboardWindow("d1", T0, T0 + timedelta(seconds=30),
                                         model_inputs.summarise_window([_scored()]))
    unusual = model_inputs.DashboardWindow(
        "d1", T0, T0 + timedelta(seconds=30),
        model_inputs.summarise_window([_scored(), _scored(minutes=0.1, anomaly=True)]))
    assert not model_inputs.is_unusual(quiet) and model_inputs.is_unusual(unusual)
    insight = LlmResult(answer={"insight": "latency spiked", "priority": "high"},
                        model="fast-m", latency_ms=1.0, spent=(Spend("fast-m", 1.0, 120, 30),))
    asked, plain = rows.insight_row(unusual, insight), rows.insight_row(quiet, None)
    table = pa.Table.from_pylist([asked, plain], schema=INSIGHTS_SCHEMA)
    assert table.column("priority").to_pylist() == ["high", "low"]
    assert table.column("model").to_pylist() == ["fast-m", None]
    assert table.column("input_tokens").to_pylist() == [120, 0]
    assert "no anomaly" in plain["insight"]


def test_rows_merged_by_key_keep_what_the_new_rows_do_not_cover():
    kept = [{"id": "a", "v": 1}, {"id": "b", "v": 1}]
    new = [{"id": "b", "v": 2}, {"id": "c", "v": 2}]
    assert rows.merged_by_key(kept, new, ("id",)) == [{"id": "a", "v": 1}, *new]
    # without key columns a row is its whole self: b's two versions are both kept
    assert rows.merged_by_key(kept, new, None) == kept + new
    assert rows.merged_by_key(kept, kept, None) == kept
