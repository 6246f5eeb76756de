"""Dashboard insights: one actionable insight per dashboard per event-time window."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows, TimestampedValue

from realtime_ai.core import model_inputs, replay, rows
from realtime_ai.core.records import ScoredMetric
from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import AskModel
from realtime_ai.transforms.bundled_group_by_key import BundledGroupByKey
from realtime_ai.windowing import GraceWindows, window_bounds


class _SummariseWindow(beam.DoFn):
    def __init__(self, grace_seconds: float):
        self._grace_seconds = grace_seconds

    def process(self, element, window=beam.DoFn.WindowParam):
        (dashboard_id, _), entries = element
        start, end = window_bounds(window, self._grace_seconds)
        # stamped at the window's last moment: the file window of its own time span
        yield TimestampedValue(model_inputs.DashboardWindow(
            dashboard_id=dashboard_id, window_start=start, window_end=end,
            summaries=model_inputs.summarise_entries(entries)), end.timestamp() - 1e-6)


@beam.typehints.with_input_types(ScoredMetric)
class DashboardInsights(beam.PTransform):
    """PCollection[ScoredMetric] -> (insight rows: PCollection[Row], dead_letter:
    PCollection[DeadLetter]), for records with a dashboard_id.

    Only a window with an anomaly is worth a model call; any other gets a row that says so.

    A window closes `grace_seconds` after the watermark passes its end (see windowing.py);
    records later than that are still scored and written to metrics/ but miss the insight.
    Rows come out in the global window, ready for any sink. `redriven_windows`, windows
    whose insight failed in an earlier run (pipelines/redrive.py), are asked again with them.
    """

    def __init__(self, config: LlmConfig, window_seconds: int, grace_seconds: float = 0.0,
                 redriven_windows: tuple[model_inputs.DashboardWindow, ...] = ()):
        super().__init__()
        self._config = config
        self._window_seconds = window_seconds
        self._grace_seconds = grace_seconds
        self._redriven_windows = redriven_windows

    def expand(self, scored):
        windows = (
            scored
            # what the summary takes of each value, plain: grouped without pickling
            | "KeyByDashboard" >> beam.FlatMap(
                lambda s: [(s.record.dashboard_id, model_inputs.window_entry(s))]
                if s.record.dashboard_id else [])
            | "InsightWindows" >> GraceWindows(self._window_seconds, self._grace_seconds)
            # One window per key: grouping many windows of one key in batch, Beam's runner
            # scans all of the key's windows for every window it closes (quadratic: at 160k
            # records, most of the job's CPU).
            | "KeyByWindow" >> beam.Map(
                lambda keyed, window=beam.DoFn.WindowParam: (
                    (keyed[0], window.start.micros), keyed[1]))
            # batch: a bundle's values of a window grouped as one list first
            | "GroupByDashboard" >> (BundledGroupByKey() if scored.is_bounded
                                     else beam.GroupByKey())
            | "SummariseWindow" >> beam.ParDo(_SummariseWindow(self._grace_seconds))
        )
        # In the global window before the model is asked: in streaming, summaries of many
        # windows are gathered into one bundle of requests instead of one bundle per window.
        windows = windows | "SummariesToGlobalWindow" >> beam.WindowInto(GlobalWindows())
        if self._redriven_windows:
            windows = (windows, scored.pipeline | "RedrivenWindows" >> beam.Create(
                self._redriven_windows)) | "WithRedrivenWindows" >> beam.Flatten()
        # (window, insight): None for a quiet window, asked nothing
        answered, failed = windows | "AskInsight" >> AskModel(
            self._config, base.DASHBOARD_INSIGHT, base.FAST, model_inputs.dashboard_insight_data,
            replay.dashboard_window, asks=model_inputs.is_unusual)
        return answered | "InsightRows" >> beam.Map(
            lambda answer: rows.insight_row(answer.input, answer.result)
        ).with_output_types(rows.Row), failed
