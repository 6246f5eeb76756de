"""Dashboard insights: one actionable insight per dashboard per event-time window."""
from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming, WindowedValue

from realtime_ai.core import model_inputs, replay, rows
from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import NAMESPACE, AskModel
from realtime_ai.transforms.bundled_group_by_key import GroupLists, ListsPerBundle
from realtime_ai.windowing import GraceWindows, window_bounds

# What the insight step reads, by the name of its input; each value is tagged with it.
SCORED, TRANSACTIONS, ALERTS = "scored", "transactions", "alerts"
# each input's values as the insight step takes them (plain: grouped without pickling), and
# their fields
_PLAIN = {SCORED: model_inputs.insight_metric_value,
          TRANSACTIONS: model_inputs.insight_transaction, ALERTS: model_inputs.insight_alert}
_FIELDS = {SCORED: model_inputs.METRIC_VALUE_FIELDS,
           TRANSACTIONS: model_inputs.TRANSACTION_VALUE_FIELDS,
           ALERTS: model_inputs.ALERT_VALUE_FIELDS}
LATE = "late"


def _plain_tuple(name: str, value):
    # A streaming job restored from a savepoint of a version before 2026-12-04 holds its open
    # windows' values as dicts of these fields.
    return tuple(value[field] for field in _FIELDS[name]) if isinstance(value, dict) else value


def _tagged_by_window_start(name: str, to_plain, size_micros: int, value,
                            micros: int) -> tuple[int, tuple[str, Any]]:
    # the start of its FixedWindows(size) window: (name, plain value) keyed as
    # _KeyByWindowStart keys it
    return micros - micros % size_micros, (name, to_plain(value))


class _KeyByWindowStart(beam.DoFn):
    """value -> (its window's start in microseconds, value). The whole windowed value, not
    WindowParam: asking for the window has Beam bind a DoFn's arguments afresh for every
    element (runners/common.py PerWindowInvoker), more CPU than the keying itself."""

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        for window in windowed.windows:
            yield WindowedValue((window.start.micros, element), windowed.timestamp,
                                (window,))


def _dashboard_windows(start: datetime, end: datetime, tagged):
    """One insight window's tagged values -> each dashboard's window, stamped at the window's
    last moment (the file window of its own time span)."""
    by_input = {SCORED: [], TRANSACTIONS: [], ALERTS: []}
    for name, value in tagged:
        by_input[name].append(value)
    stamp = Timestamp.of(end.timestamp() - 1e-6)
    for dashboard_window in model_inputs.dashboard_windows(
            start, end, by_input[SCORED], by_input[TRANSACTIONS], by_input[ALERTS]):
        yield dashboard_window, stamp


class _DashboardWindows(beam.DoFn):
    """One insight window's values -> each dashboard's window; values that come after the
    window's insight was made (a late pane) -> dead letters, counted. The whole windowed
    value, not WindowParam and PaneInfoParam (see _KeyByWindowStart)."""

    def __init__(self, grace_seconds: float):
        self._grace_seconds = grace_seconds
        self._late = Metrics.counter(NAMESPACE, "insight_late_values")

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        _, held = element
        tagged = [(name, _plain_tuple(name, value)) for name, value in held]
        windows = windowed.windows
        start, end = window_bounds(windows[0], self._grace_seconds)
        if windowed.pane_info.timing == PaneInfoTiming.LATE:
            for name, value in tagged:
                self._late.inc()
                yield TaggedOutput(LATE, rows.late_for_insight_dead_letter(
                    dict(zip(_FIELDS[name], value, strict=True)), start, end))
            return
        for dashboard_window, stamp in _dashboard_windows(start, end, tagged):
            yield WindowedValue(dashboard_window, stamp, windows)


class _WindowsFromStarts(beam.DoFn):
    """Batch: (a window's start in microseconds, its values), grouped in the global window
    -> each dashboard's window, in the global window. Its bounds come from the key, so
    that neither the groups nor the summaries need a window of their own: assigning one, and
    moving every summary back to the global window, cost a step per summary."""

    def __init__(self, window_seconds: int):
        self._window = timedelta(seconds=window_seconds)

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        start_micros, tagged = element
        start = Timestamp(micros=start_micros).to_utc_datetime(has_tz=True)
        for dashboard_window, stamp in _dashboard_windows(start, start + self._window, tagged):
            yield WindowedValue(dashboard_window, stamp, windowed.windows)


class DashboardInsights(beam.PTransform):
    """{"scored": PCollection[ScoredMetric], "transactions": PCollection[transaction row],
    "alerts": PCollection[alert]} (any of them) -> (insight rows, dead_letter).

    Per insight window: an insight per metric dashboard (records with a dashboard_id), and one
    of the transactions dashboard (model_inputs.TRANSACTIONS_DASHBOARD) on the window's
    payments; each row carries the ids of the alerts raised in its window. Only a window with
    an anomaly or an escalated payment is worth a model call; any other gets a row that says
    so.

    A window closes `grace_seconds` after the watermark passes its end (see windowing.py).
    Values later than that, up to `allowed_lateness_seconds`, miss the insight (it is made
    once): they go to the dead letters ("late for insight window") and are counted
    (`insight_late_values`); their rows are still written to their own datasets. Rows come
    out in the global window, ready for any sink. `redriven_windows`, windows whose insight
    failed in an earlier run (pipelines/redrive.py), are asked again with them.
    """

    def __init__(self, config: LlmConfig, window_seconds: int, grace_seconds: float = 0.0,
                 allowed_lateness_seconds: float = 0.0,
                 redriven_windows: tuple[model_inputs.DashboardWindow, ...] = ()):
        super().__init__()
        self._config = config
        self._window_seconds = window_seconds
        self._grace_seconds = grace_seconds
        self._allowed_lateness_seconds = allowed_lateness_seconds
        self._redriven_windows = redriven_windows

    def expand(self, inputs):
        pipeline = next(iter(inputs.values())).pipeline
        bounded = all(pcoll.is_bounded for pcoll in inputs.values())
        if bounded:
            windows, late = self._windows_bounded(inputs, pipeline), None
        else:
            windows, late = self._windows_streaming(inputs, pipeline)
        if self._redriven_windows:
            windows = (windows, pipeline | "RedrivenWindows" >> beam.Create(
                self._redriven_windows)) | "WithRedrivenWindows" >> beam.Flatten()
        # a quiet window is asked nothing: its answer is None
        answered, failed = windows | "AskInsight" >> AskModel(
            self._config, base.DASHBOARD_INSIGHT, base.FAST, model_inputs.dashboard_insight_data,
            replay.dashboard_window, asks=model_inputs.is_unusual)
        insight_rows = answered | "InsightRows" >> beam.Map(
            lambda answer: rows.insight_row(answer.input, answer.result)
        ).with_output_types(rows.Row)
        if late is None:
            return insight_rows, failed
        return insight_rows, (failed, late) | "InsightDeadLetters" >> beam.Flatten()

    def _windows_streaming(self, inputs, pipeline):
        """Each dashboard's window, in the global window, and the late values' dead
        letters."""
        tagged = [inputs[name] | f"Tag{name.title()}" >> beam.Map(
            lambda value, name=name: (name, _PLAIN[name](value)))
            for name in (SCORED, TRANSACTIONS, ALERTS) if name in inputs]
        grouped = (
            tuple(tagged)
            | "AllWindowValues" >> beam.Flatten(pipeline=pipeline)
            | "InsightWindows" >> GraceWindows(self._window_seconds, self._grace_seconds,
                                               self._allowed_lateness_seconds)
            # One window per key: grouping many windows of one key in batch, Beam's
            # runner scans all of the key's windows for every window it closes
            # (quadratic: at 160k records, most of the job's CPU). All dashboards of a
            # window share its key: a metric's alert is linked to its dashboard through
            # the window's values.
            | "KeyByWindow" >> beam.ParDo(_KeyByWindowStart())
            | "GroupByWindow" >> beam.GroupByKey())
        windows, late = grouped | "DashboardWindows" >> beam.ParDo(_DashboardWindows(
            self._grace_seconds)).with_outputs(LATE, main="windows")
        # In the global window before the model is asked: summaries of many windows are
        # gathered into one bundle of requests instead of one bundle per window.
        return (windows | "SummariesToGlobalWindow" >> beam.WindowInto(GlobalWindows()),
                late | "LateToGlobalWindow" >> beam.WindowInto(GlobalWindows()))

    def _windows_bounded(self, inputs, pipeline):
        """Batch: each dashboard's window, in the global window. The values are tagged, keyed
        by their window's start and listed in one step per input, so that per value there
        is no Flatten, window assignment or keying step of its own (of a 160k-record batch
        job, these cost about a third of its CPU), and grouped in the global window
        (_WindowsFromStarts). Plain fixed windows: bounded input is all on time, so a grace
        period would move no value to another window, only the windows' bounds (see
        windowing.py)."""
        size_micros = self._window_seconds * 1_000_000
        lists = [inputs[name] | f"Tag{name.title()}" >> ListsPerBundle(functools.partial(
            _tagged_by_window_start, name, _PLAIN[name], size_micros))
            for name in (SCORED, TRANSACTIONS, ALERTS) if name in inputs]
        return (tuple(lists)
                | "AllWindowValues" >> beam.Flatten(pipeline=pipeline)
                | "GroupByWindow" >> GroupLists(beam.WindowInto(GlobalWindows()))
                | "DashboardWindows" >> beam.ParDo(_WindowsFromStarts(self._window_seconds)))
