"""A GroupByKey that moves one list per key, window and bundle instead of one element per value.

Every element a GroupByKey takes costs the runner its own encoding, and on the DirectRunner
(the FnApiRunner) a trigger driver's pass with state and timers whenever the windowing is not
the default one (fixed windows, or a timestamp combiner such as OUTPUT_AT_EARLIEST): about
as much CPU as everything else a value meets on its way. A bundle's values of one key and
window are few lists, not many values.

The groups come out as the GroupByKey's would: each key's values of a window together, in no
particular order. Each list carries the earliest timestamp of its values, so the group's
timestamp is the one the windowing's timestamp combiner would give (OUTPUT_AT_EARLIEST, or
the end of the window). Bounded input only: a list waits for the end of its bundle, which
on a stream would hold values back and change how panes are cut.
"""
from __future__ import annotations

import itertools

import apache_beam as beam
from apache_beam.utils.windowed_value import WindowedValue


class _ListsPerBundleDoFn(beam.DoFn):
    def start_bundle(self):
        # (key, window) -> [earliest timestamp, values]
        self._lists: dict = {}

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                window=beam.DoFn.WindowParam):
        key, value = element
        held = self._lists.get((key, window))
        if held is None:
            self._lists[(key, window)] = [timestamp, [value]]
            return
        held[1].append(value)
        if timestamp < held[0]:
            held[0] = timestamp

    def finish_bundle(self):
        for (key, window), (timestamp, values) in self._lists.items():
            yield WindowedValue((key, values), timestamp, [window])
        self._lists = {}


def _concatenated(grouped):
    key, lists = grouped
    return key, itertools.chain.from_iterable(lists)


class BundledGroupByKey(beam.PTransform):
    """Bounded PCollection[(K, V)] -> PCollection[(K, Iterable[V])], as GroupByKey (see the
    module docstring). `windowing`, if given, is applied to the lists just before they are
    grouped (so a WindowInto into the global window with a timestamp combiner runs once per
    list, not once per value)."""

    def __init__(self, windowing: beam.WindowInto | None = None):
        super().__init__()
        self._windowing = windowing

    def expand(self, keyed):
        if not keyed.is_bounded:
            raise ValueError("BundledGroupByKey takes bounded input only")
        lists = keyed | "ListsPerBundle" >> beam.ParDo(_ListsPerBundleDoFn())
        if self._windowing is not None:
            lists = lists | "Windowing" >> self._windowing
        return (lists
                | "GroupByKey" >> beam.GroupByKey()
                | "Concatenate" >> beam.Map(_concatenated))
