"""Event-time windows that close a grace period after the watermark passes their end.

The per-key ordering step releases a record when the watermark passes it, so its outputs
reach the next stage just behind the watermark, and records it lets in late (within
--allowed_lateness_seconds) are further behind. Fixed windows closing at the watermark would
miss them: the DirectRunner does not hold the watermark for pending timers at all, and on any
runner a record processed late is behind it. So a window [S, E) here is the Beam window
[S + grace, E + grace) of timestamps moved forward by `grace`: it fires when the watermark
passes E + grace, and `window_bounds` gives back [S, E). With grace 0 (batch) these are plain
fixed windows.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import apache_beam as beam
from apache_beam.transforms import trigger
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration


def window_bounds(window, grace_seconds: float) -> tuple[datetime, datetime]:
    """The [start, end) of the event times in a window made by GraceWindows."""
    grace = timedelta(seconds=grace_seconds)
    return (window.start.to_utc_datetime(has_tz=True) - grace,
            window.end.to_utc_datetime(has_tz=True) - grace)


T = beam.typehints.TypeVariable("T")


@beam.typehints.with_input_types(T)
@beam.typehints.with_output_types(T)
class GraceWindows(beam.PTransform):
    """PCollection -> the same elements in fixed event-time windows of `size_seconds` that
    fire once when the watermark passes their end plus `grace_seconds`, then again for each
    bundle of records later than that, up to `allowed_lateness_seconds` (each pane holding
    only new records). Late panes fire on arrival rather than after a processing-time delay:
    the DirectRunner stalls on processing-time late triggers, and late panes are rare once
    the grace period covers the ordering step's release delay."""

    def __init__(self, size_seconds: int, grace_seconds: float,
                 allowed_lateness_seconds: float = 0.0):
        super().__init__()
        self._size = size_seconds
        self._grace = Duration.of(grace_seconds)
        self._allowed_lateness = allowed_lateness_seconds

    def expand(self, elements):
        grace = self._grace
        if not grace.micros and not self._allowed_lateness:  # batch: plain fixed windows
            return elements | "FixedWindows" >> beam.WindowInto(FixedWindows(self._size))
        delayed = elements | "DelayByGrace" >> beam.Map(
            lambda element, timestamp=beam.DoFn.TimestampParam: TimestampedValue(
                element, timestamp + grace))
        return delayed | "FixedWindows" >> beam.WindowInto(
            FixedWindows(self._size, offset=grace.micros / 1e6 % self._size),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            allowed_lateness=self._allowed_lateness,
            accumulation_mode=trigger.AccumulationMode.DISCARDING)
