"""Dashboard insights: one actionable insight per dashboard per event-time window."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows, GlobalWindows

from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms import outputs
from realtime_ai.transforms.enrichment import AskModel


class _SummariseWindow(beam.DoFn):
    def process(self, element, window=beam.DoFn.WindowParam):
        dashboard_id, scored = element
        yield outputs.DashboardWindow(
            dashboard_id=dashboard_id,
            window_start=window.start.to_utc_datetime(has_tz=True),
            window_end=window.end.to_utc_datetime(has_tz=True),
            summaries=outputs.summarise_window(scored))


class DashboardInsights(beam.PTransform):
    """PCollection[ScoredMetric] -> (insight rows, dead_letter), for records with a dashboard_id.

    Rows come out in the global window, ready for any sink.
    """

    def __init__(self, config: LlmConfig, window_seconds: int):
        super().__init__()
        self._config = config
        self._window_seconds = window_seconds

    def expand(self, scored):
        windows = (
            scored
            | "KeyByDashboard" >> beam.FlatMap(
                lambda s: [(s.record.dashboard_id, s)] if s.record.dashboard_id else [])
            | "InsightWindows" >> beam.WindowInto(FixedWindows(self._window_seconds))
            | "GroupByDashboard" >> beam.GroupByKey()
            | "SummariseWindow" >> beam.ParDo(_SummariseWindow())
        )
        answered, dead = windows | "AskInsight" >> AskModel(
            self._config, base.DASHBOARD_INSIGHT, base.FAST, outputs.dashboard_insight_data)
        rows = (
            answered
            | "InsightRows" >> beam.MapTuple(outputs.insight_row)
            | "InsightsToGlobalWindow" >> beam.WindowInto(GlobalWindows())
        )
        failed = dead | "FailuresToGlobalWindow" >> beam.WindowInto(GlobalWindows())
        return rows, failed
