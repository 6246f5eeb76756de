"""A GroupByKey that moves one list per key, window and bundle instead of one element per value.

Every element a GroupByKey takes costs the runner its own encoding, and on the DirectRunner
(the FnApiRunner) a trigger driver's pass with state and timers whenever the windowing is not
the default one (fixed windows, or a timestamp combiner such as OUTPUT_AT_EARLIEST): about
as much CPU as everything else a value meets on its way. A bundle's values of one key and
window are few lists, not many values. What must happen to every value on its way to the
grouping (keying it, making it plain, finding its window) is done as it is listed
(`key_value`), not in steps of its own: each step a value passes costs the SDK its own
invocation, more than such small work.

The groups come out as the GroupByKey's would: each key's values of a window together, in no
particular order. Each list carries the earliest timestamp of its values, so the group's
timestamp is the one the windowing's timestamp combiner would give (OUTPUT_AT_EARLIEST, or
the end of the window). Bounded input only: a list waits for the end of its bundle, which
on a stream would hold values back and change how panes are cut.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import (
    FixedWindows,
    GlobalWindow,
    GlobalWindows,
    IntervalWindow,
    TimestampCombiner,
    WindowFn,
)
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from realtime_ai.transforms import sdk_workarounds

# (element, its timestamp in micros) -> (key, value). Micros, as the windowed value holds
# them: its `timestamp` makes a Timestamp when none was made yet (0.65 us, checks included),
# and Beam's Timestamp.micros is a property that checks the precision every time.
KeyValue = Callable[[Any, int], tuple[Any, Any]]


class _ListsPerBundleDoFn(beam.DoFn):
    def __init__(self, key_value: KeyValue | None):
        self._key_value = key_value

    def setup(self):
        # A bundle's values are held here until it ends: in batch, every record of the job
        # (sdk_workarounds.rarer_full_collections; at 160k records, 9 full collections took
        # 1.5 s while the lists filled, before the ordering step's setup raised the setting).
        sdk_workarounds.rarer_full_collections()

    def start_bundle(self):
        # (key, window) -> [earliest timestamp in micros, values]
        self._lists: dict = {}

    # The whole windowed value, not WindowParam: a DoFn that asks for its window has Beam
    # bind its arguments afresh for every element (runners/common.py PerWindowInvoker), about
    # as much CPU as the rest of this method.
    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        micros = windowed.timestamp_micros  # no Timestamp made (see KeyValue)
        key, value = element if self._key_value is None else self._key_value(element, micros)
        for window in windowed.windows:
            held = self._lists.get((key, window))
            if held is None:
                self._lists[(key, window)] = [micros, [value]]
                continue
            held[1].append(value)
            if micros < held[0]:
                held[0] = micros

    def finish_bundle(self):
        for (key, window), (micros, values) in self._lists.items():
            yield WindowedValue((key, GroupedValues([values])), Timestamp(micros=micros),
                                [window])
        self._lists = {}


def _plain_window(window) -> tuple[int, int] | None:
    # plain, so that the grouping encodes it natively
    if isinstance(window, GlobalWindow):
        return None
    return window.start.micros, window.end.micros


class _ByTargetWindowDoFn(beam.DoFn):
    """(K, GroupedValues) -> ((K, its window under `windowfn`, plain), (earliest micros, the
    values))."""

    def __init__(self, windowfn):
        self._windowfn = windowfn

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        key, values = element
        timestamp = windowed.timestamp
        for window in windowed.windows:
            for target in self._windowfn.assign(
                    WindowFn.AssignContext(timestamp, element=element, window=window)):
                yield (key, _plain_window(target)), (timestamp.micros, values)


# How a timestamp combiner stamps a group from its lists' earliest timestamps (None: at the
# end of its window).
_COMBINED_STAMPS = {TimestampCombiner.OUTPUT_AT_EARLIEST: min,
                    TimestampCombiner.OUTPUT_AT_LATEST: max,
                    TimestampCombiner.OUTPUT_AT_EOW: None}


class GroupedValues:
    """One group's values, as GroupLists gives them (iterable more than once, in no
    particular order): the lists it was made of, not copied into one."""

    __slots__ = ("lists",)

    def __init__(self, lists: list[list]):
        self.lists = lists

    def __iter__(self):
        return itertools.chain.from_iterable(self.lists)

    def __len__(self) -> int:
        return sum(len(values) for values in self.lists)

    def __repr__(self) -> str:
        return f"GroupedValues({list(self)!r})"


class GroupedValuesCoder(beam.coders.Coder):
    """The values as one iterable of plain values. Estimates a group's size from its first
    value: Beam measures the size of sampled outputs of every step (the first ten of each
    bundle among them), and a group is all of a key's values; encoding each sampled group
    to measure it (pickling it, as FastPrimitivesCoder does an object it does not know) cost
    0.55 s of a 160k-record job."""

    # A ListCoder writes what an IterableCoder writes, straight from any sized iterable, and
    # reads a list: no copy of the values either way.
    _values = beam.coders.ListCoder(beam.coders.FastPrimitivesCoder())
    _value = beam.coders.FastPrimitivesCoder()

    def encode(self, group: GroupedValues) -> bytes:
        return self._values.encode(group)

    def decode(self, encoded: bytes) -> GroupedValues:
        return GroupedValues([self._values.decode(encoded)])

    def estimate_size(self, group: GroupedValues) -> int:
        first = next(iter(group), None)
        return len(group) * self._value.estimate_size(first)

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return GroupedValues


beam.coders.registry.register_coder(GroupedValues, GroupedValuesCoder)


class _RestoredGroupsDoFn(beam.DoFn):
    """((K, window), [(earliest micros, list), ...]) -> (K, GroupedValues) in that window,
    stamped as `timestamp_combiner` would stamp the group."""

    def __init__(self, timestamp_combiner):
        if timestamp_combiner not in _COMBINED_STAMPS:
            raise ValueError(f"BundledGroupByKey: no {timestamp_combiner} timestamps")
        self._combine = _COMBINED_STAMPS[timestamp_combiner]

    def process(self, element):
        (key, plain_window), stamped_lists = element
        stamped_lists = list(stamped_lists)
        window = GlobalWindow() if plain_window is None else IntervalWindow(
            Timestamp(micros=plain_window[0]), Timestamp(micros=plain_window[1]))
        timestamp = (window.max_timestamp() if self._combine is None else
                     Timestamp(micros=self._combine(micros for micros, _ in stamped_lists)))
        yield WindowedValue((key, GroupedValues(
            [values for _, listed in stamped_lists for values in listed.lists])),
                            timestamp, [window])


def _bounded_only(pcoll):
    if not pcoll.is_bounded:
        raise ValueError("BundledGroupByKey takes bounded input only")


class ListsPerBundle(beam.PTransform):
    """Bounded PCollection[E] -> PCollection[(K, GroupedValues)]: per bundle, the values of
    each key and window as one list, stamped with its earliest value's timestamp. Each element
    becomes (K, V) by `key_value(element, its timestamp in micros)`, or is one already.
    GroupLists groups the lists (of one or several such PCollections, flattened)."""

    def __init__(self, key_value: KeyValue | None = None):
        super().__init__()
        self._key_value = key_value

    def expand(self, elements):
        _bounded_only(elements)
        return elements | beam.ParDo(_ListsPerBundleDoFn(self._key_value)).with_output_types(
            tuple[Any, GroupedValues])


class GroupLists(beam.PTransform):
    """PCollection[(K, list[V])] from ListsPerBundle -> PCollection[(K, Iterable[V])], as
    GroupByKey of the values would give in `windowing` (a WindowInto; by default the lists'
    own windowing): fixed or global windows. All values of a list take the window of its
    timestamp: lists made in other windows than these must be keyed by the window their
    values belong in (as DashboardInsights does).

    The grouping itself is in the global window with the default windowing, each list keyed
    also by its window: in any other, the DirectRunner runs a trigger driver, with state and
    timers, over every key and window (at 160k records, a tenth of the job's CPU). The
    groups then get their window and timestamp back, and `windowing` is applied to them."""

    def __init__(self, windowing: beam.WindowInto | None = None):
        super().__init__()
        self._windowing = windowing

    def expand(self, lists):
        _bounded_only(lists)
        windowing = self._windowing or beam.WindowInto(
            lists.windowing.windowfn, trigger=lists.windowing.triggerfn,
            accumulation_mode=lists.windowing.accumulation_mode,
            timestamp_combiner=lists.windowing.timestamp_combiner,
            allowed_lateness=lists.windowing.allowed_lateness)
        windowfn = windowing.windowing.windowfn
        if not isinstance(windowfn, (GlobalWindows, FixedWindows)):
            raise ValueError(f"BundledGroupByKey: fixed or global windows only, not {windowfn}")
        return (lists
                | "ByWindow" >> beam.ParDo(_ByTargetWindowDoFn(windowfn)).with_output_types(
                    tuple[tuple[Any, tuple[int, int] | None], tuple[int, GroupedValues]])
                | "InGlobalWindow" >> beam.WindowInto(GlobalWindows())
                | "GroupByKey" >> beam.GroupByKey()
                | "Restored" >> beam.ParDo(_RestoredGroupsDoFn(
                    windowing.windowing.timestamp_combiner)).with_output_types(
                        tuple[Any, GroupedValues])
                | "Windowing" >> windowing)


class BundledGroupByKey(beam.PTransform):
    """Bounded PCollection[(K, V)] (or PCollection[E] with `key_value`, see ListsPerBundle)
    -> PCollection[(K, Iterable[V])], as GroupByKey (see the module docstring). `windowing`:
    see GroupLists."""

    def __init__(self, windowing: beam.WindowInto | None = None,
                 key_value: KeyValue | None = None):
        super().__init__()
        self._windowing = windowing
        self._key_value = key_value

    def expand(self, keyed):
        return (keyed
                | "ListsPerBundle" >> ListsPerBundle(self._key_value)
                | "GroupLists" >> GroupLists(self._windowing))
