"""Each public composite of the pipeline on its own, with the local model (in the manner of
Beam's examples/complete/game tests): a few hand-made inputs, the outputs that matter."""
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import IntervalWindow, TimestampedValue
from apache_beam.typehints.decorators import TypeCheckError
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from realtime_ai.core import model_inputs, rows
from realtime_ai.core.detectors import ZSCORE, DetectorSettings
from realtime_ai.core.keyed import OrderingSettings
from realtime_ai.core.records import (
    TRANSACTIONS_SCHEMA,
    FeaturedTransaction,
    MetricRecord,
    MetricScore,
    ScoredMetric,
    Transaction,
    TransactionFeatures,
)
from realtime_ai.io.parquet import WriteDataset
from realtime_ai.llm.base import LOCAL_MODEL_LABEL, LlmConfig
from realtime_ai.transforms.dashboard_insights import DashboardInsights, _DashboardWindows
from realtime_ai.transforms.enrich_transactions import EnrichTransactions
from realtime_ai.transforms.explain_anomalies import ExplainAnomalies
from realtime_ai.transforms.parse import ParseTransactions
from realtime_ai.transforms.score_metrics import ScoreMetrics
from tests.test_enrichment import gathering_steps

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
LOCAL = LlmConfig(backend="local")


def _featured(transaction_id: str, *, country: str, last_country: str | None,
              seconds_since_last: float | None) -> FeaturedTransaction:
    tx = Transaction(transaction_id, "c1", 40.0, "EUR", "Cafe Uno", "restaurants", country,
                     "in_store", T0)
    features = TransactionFeatures(
        history_count=12, mean_amount=38.0, std_amount=6.0, amount_zscore=0.33, velocity_1h=0,
        amount_1h=0.0, seconds_since_last=seconds_since_last,
        new_country=country != last_country, new_merchant_category=False,
        last_country=last_country)
    return FeaturedTransaction(tx, features, ())


def _metric(minute: float, value: float, dashboard: str | None = "checkout") -> MetricRecord:
    metadata = (("dashboard_id", dashboard),) if dashboard else ()
    return MetricRecord("api.latency_ms", value, T0 + timedelta(minutes=minute),
                        f"t{minute}", metadata)


def _scored(record: MetricRecord, z: float, anomaly_score: float) -> ScoredMetric:
    return ScoredMetric(record, MetricScore(z_score=z, anomaly_score=anomaly_score,
                                            is_anomaly=anomaly_score >= 0.3,
                                            rolling_mean=100.0, rolling_std=5.0,
                                            rolling_count=60))


def test_enrich_transactions_escalates_only_what_the_fast_model_rates_high():
    usual = _featured("tx-usual", country="DE", last_country="DE", seconds_since_last=7200.0)
    # an hour after a purchase in Germany, one in Brazil: impossible travel (risk 0.92)
    travel = _featured("tx-travel", country="BR", last_country="DE", seconds_since_last=3600.0)
    with TestPipeline() as p:
        transaction_rows, alerts, dead, _scored = (p | beam.Create([usual, travel])
                                          | EnrichTransactions(LOCAL, risk_threshold=0.8))
        assert_that(transaction_rows | "Verdicts" >> beam.Map(
            lambda row: (row["transaction_id"], row["escalated"], row["analysis"] is not None,
                         row["model"])),
            equal_to([("tx-usual", False, False, LOCAL_MODEL_LABEL),
                      ("tx-travel", True, True, LOCAL_MODEL_LABEL)]), label="Rows")
        assert_that(alerts | "AlertIds" >> beam.Map(
            lambda alert: (alert["alert_id"], alert["severity"])),
            equal_to([(rows.alert_id("transaction", "tx-travel", T0), "high")]),
            label="Alerts")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


def test_streaming_asks_the_deep_model_in_the_fast_models_gathered_bundles():
    # One keyed hop (GatherForModel) before the two model calls, not one before each: the
    # deep model's gathering was a second shuffle that every alert waited for.
    p = beam.Pipeline(options=PipelineOptions(streaming=True))
    _ = (p | TestStream().advance_watermark_to_infinity()
         | EnrichTransactions(LlmConfig(backend="openai"), risk_threshold=0.8))
    assert gathering_steps(p) == ["EnrichTransactions/ScoreRisk/GatherForModel"]


def test_explain_anomalies_asks_only_for_anomalies_and_alerts_on_severe_ones():
    spike = _scored(_metric(0, 180.0), z=9.0, anomaly_score=0.995)  # critical
    usual = _scored(_metric(1, 101.0), z=0.2, anomaly_score=0.05)
    with TestPipeline() as p:
        metric_rows, alerts, dead = p | beam.Create([spike, usual]) | ExplainAnomalies(LOCAL)
        assert_that(metric_rows | "Explained" >> beam.Map(
            lambda row: (row["timestamp"], row["is_anomaly"], row["analysis"] is not None,
                         row["model"])),
            equal_to([("t0", True, True, LOCAL_MODEL_LABEL), ("t1", False, False, None)]),
            label="Rows")
        assert_that(alerts | "Severities" >> beam.Map(
            lambda alert: (alert["alert_id"], alert["severity"])),
            equal_to([(rows.alert_id("metric", "api.latency_ms", T0), "critical")]),
            label="Alerts")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


def test_dashboard_insights_one_row_per_dashboard_and_window():
    scored = [_scored(_metric(minute, 100.0 + minute), z=0.1, anomaly_score=0.0)
              for minute in (0, 1, 4, 6)]
    scored.append(_scored(_metric(2, 50.0, dashboard=None), z=0.1, anomaly_score=0.0))
    with TestPipeline() as p:
        insights = (
            p | beam.Create(scored)
            | beam.Map(lambda s: TimestampedValue(s, s.record.event_time.timestamp())))
        insights, dead = {"scored": insights} | DashboardInsights(LOCAL, window_seconds=300)
        assert_that(insights | "Windows" >> beam.Map(
            lambda row: (row["dashboard_id"], row["window_start"], row["window_end"],
                         row["metric_count"])),
            equal_to([("checkout", T0, T0 + timedelta(minutes=5), 1),
                      ("checkout", T0 + timedelta(minutes=5), T0 + timedelta(minutes=10), 1)]),
            label="Insights")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


def test_score_metrics_flags_a_spike_once_per_value_in_event_time_order():
    values = [100.0 + (i % 3) for i in range(30)] + [400.0]
    records = [_metric(i, value) for i, value in enumerate(values)]
    arrivals = records[::-1] + records[:5]  # reversed, and five delivered twice
    with TestPipeline() as p:
        ordered = (p | beam.Create(arrivals)
                   | beam.Map(lambda r: TimestampedValue(r, r.event_time.timestamp()))
                   | ScoreMetrics(DetectorSettings(detector=ZSCORE, window=20, threshold=0.5),
                                  OrderingSettings.of_seconds(0, 86400, 86400)))
        assert_that(ordered.outputs | "Flags" >> beam.Map(
            lambda s: (s.record.timestamp, s.is_anomaly)),
            equal_to([(r.timestamp, r.value == 400.0) for r in records]), label="Scores")
        assert_that(ordered.dead_letter, equal_to([]), label="NoDeadLetters")


def _wrong_inputs():
    featured = _featured("tx-1", country="DE", last_country="DE", seconds_since_last=60.0)
    scored = _scored(_metric(0, 100.0), z=0.0, anomaly_score=0.0)
    return [
        # a transaction not yet featured, and a metric value not yet scored
        ("EnrichTransactions", [featured.transaction], EnrichTransactions(LOCAL, 0.8)),
        ("ExplainAnomalies", [scored.record], ExplainAnomalies(LOCAL)),
        ("ScoreMetrics", [scored], ScoreMetrics(DetectorSettings(), OrderingSettings.of_seconds(
            0, 86400, 86400))),
        ("ParseTransactions", [b"{}"], ParseTransactions(1000)),  # bytes, not text
        ("WriteDataset", [featured], WriteDataset("/nowhere", "transactions",
                                                  TRANSACTIONS_SCHEMA)),  # a record, not a row
    ]


@pytest.mark.parametrize("label, elements, composite", _wrong_inputs(),
                         ids=[case[0] for case in _wrong_inputs()])
def test_a_composite_rejects_elements_of_the_wrong_type_when_the_pipeline_is_built(
        label, elements, composite):
    p = TestPipeline()
    with pytest.raises(TypeCheckError, match=f"Input type hint violation at {label}"):
        _ = p | beam.Create(elements) | label >> composite


def test_values_late_for_their_insight_window_are_dead_lettered_and_counted():
    # The window [T0, T0+5min) closes 10 s after the watermark passes its end; a value of it
    # that comes later (within the allowed lateness) misses the insight: it was dropped with
    # no trace; now it is a dead letter with the reason, and counted.
    on_time = _scored(_metric(1, 101.0), z=0.1, anomaly_score=0.0)
    late = _scored(_metric(2, 102.0), z=0.1, anomaly_score=0.0)
    closed = (T0 + timedelta(minutes=5, seconds=11)).timestamp()
    stream = (TestStream()
              .advance_watermark_to(T0.timestamp())
              .add_elements([TimestampedValue(on_time, on_time.record.event_time.timestamp())])
              .advance_watermark_to(closed)
              .add_elements([TimestampedValue(late, late.record.event_time.timestamp())])
              .advance_watermark_to_infinity())
    p = TestPipeline(options=PipelineOptions(streaming=True))
    insights, dead = {"scored": p | stream} | DashboardInsights(
        LOCAL, window_seconds=300, grace_seconds=10, allowed_lateness_seconds=3600)
    assert_that(insights | "Windows" >> beam.Map(
        lambda row: (row["dashboard_id"], row["window_start"], row["metric_count"])),
        equal_to([("checkout", T0, 1)]), label="OneInsight")
    assert_that(dead | "Reasons" >> beam.Map(
        lambda letter: (letter.source, letter.error.split(": ")[0], json.loads(
            letter.payload)["value"])),
        equal_to([("insights", f"{rows.LATE_FOR_INSIGHT} 2026-03-02T09:00:00Z to "
                               "2026-03-02T09:05:00Z", 102.0)]), label="LateValue")
    p.run().wait_until_finish()
    # Counted where it happens (the streaming DirectRunner undercounts its steps' counters).
    late_pane = PaneInfo(is_first=False, is_last=False, timing=PaneInfoTiming.LATE, index=1,
                         nonspeculative_index=1)
    window = IntervalWindow(T0.timestamp() + 10, T0.timestamp() + 310)
    windows, counted = _DashboardWindows(grace_seconds=10), []
    assert windows._late.metric_name.name == "insight_late_values"
    windows._late = SimpleNamespace(inc=lambda n=1: counted.append(n))
    # as the step gets them: plain (model_inputs.insight_metric_value)
    plain = model_inputs.insight_metric_value(late)
    element = (0, [("scored", plain), ("scored", plain)])
    letters = list(windows.process(element, windowed=WindowedValue(
        element, window.max_timestamp(), [window], late_pane)))
    assert [letter.tag for letter in letters] == ["late", "late"] and sum(counted) == 2
    # dead-lettered with its field names, as the pipeline's late value above
    payload = json.loads(letters[0].value.payload)
    assert (payload["value"], payload["dashboard_id"], payload["metric"]) == (
        102.0, "checkout", "api.latency_ms")


def test_insight_values_held_by_a_savepoint_of_the_earlier_version_are_still_summarised():
    # Until 2026-12-04 the insight step's values were dicts: a streaming job restored from a
    # savepoint of then holds its open windows' values so, and they summarise as before.
    plain = model_inputs.insight_metric_value(_scored(_metric(1, 101.0), z=0.1,
                                                      anomaly_score=0.0))
    saved = dict(zip(model_inputs.METRIC_VALUE_FIELDS, plain, strict=True))
    window = IntervalWindow(T0.timestamp() + 10, T0.timestamp() + 310)
    on_time = PaneInfo(is_first=True, is_last=True, timing=PaneInfoTiming.ON_TIME, index=0,
                       nonspeculative_index=0)

    def dashboard_windows(value):
        element = (0, [("scored", value)])
        return [output.value for output in _DashboardWindows(grace_seconds=10).process(
            element, windowed=WindowedValue(element, window.max_timestamp(), [window], on_time))]

    (from_plain,) = dashboard_windows(plain)
    assert dashboard_windows(saved) == [from_plain]
    assert (from_plain.dashboard_id, from_plain.summaries[0].count) == ("checkout", 1)
