"""BundledGroupByKey groups as GroupByKey does, with the group timestamps of the windowing."""
import gc

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import (
    FixedWindows,
    GlobalWindows,
    TimestampCombiner,
    TimestampedValue,
)

from realtime_ai.transforms.bundled_group_by_key import (
    BundledGroupByKey,
    GroupedValues,
    GroupedValuesCoder,
)

VALUES = [("a", 1, 30), ("b", 2, 5), ("a", 3, 10), ("a", 4, 70), ("b", 5, 65), ("c", 6, 1)]


def _stamped(p):
    return p | beam.Create(VALUES) | beam.Map(lambda kvt: TimestampedValue(kvt[:2], kvt[2]))


def _sorted_groups(grouped):
    return grouped | beam.MapTuple(lambda key, values: (key, sorted(values)))


def test_groups_each_keys_values_of_a_window_as_group_by_key_does():
    with TestPipeline() as p:
        windowed = _stamped(p) | beam.WindowInto(FixedWindows(60))
        bundled = _sorted_groups(windowed | BundledGroupByKey())
        # what GroupByKey gives: [0, 60) and [60, 120) apart
        assert_that(bundled, equal_to([("a", [1, 3]), ("a", [4]), ("b", [2]), ("b", [5]),
                                       ("c", [6])]))


def test_a_group_keeps_the_earliest_timestamp_of_its_values():
    with TestPipeline() as p:
        grouped = _stamped(p) | BundledGroupByKey(beam.WindowInto(
            GlobalWindows(), timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST))
        stamps = grouped | beam.MapTuple(
            lambda key, values, timestamp=beam.DoFn.TimestampParam: (key, timestamp.micros))
        assert_that(stamps, equal_to([("a", 10_000_000), ("b", 5_000_000), ("c", 1_000_000)]))


def test_unbounded_input_is_refused():
    p = TestPipeline()
    stream = p | TestStream().add_elements([("a", 1)])
    with pytest.raises(ValueError, match="bounded input only"):
        _ = stream | BundledGroupByKey()


def test_elements_keyed_as_they_are_listed_group_as_keyed_ones_do():
    with TestPipeline() as p:
        values = _stamped(p) | beam.WindowInto(FixedWindows(60))
        grouped = _sorted_groups(values | BundledGroupByKey(
            key_value=lambda kv, micros: (kv[0], (micros, kv[1]))))
        assert_that(grouped, equal_to([
            ("a", [(10_000_000, 3), (30_000_000, 1)]), ("a", [(70_000_000, 4)]),
            ("b", [(5_000_000, 2)]), ("b", [(65_000_000, 5)]), ("c", [(1_000_000, 6)])]))


def test_the_worker_that_lists_a_bundle_runs_full_garbage_collections_rarely():
    # The lists hold a batch job's every record until the bundle ends; each full collection
    # would walk them all again (9 of them, 1.5 s of a 160k-record main run, before the
    # ordering step downstream raised the setting).
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's
    try:
        with TestPipeline() as p:
            _ = _stamped(p) | BundledGroupByKey()
        threshold = gc.get_threshold()
    finally:
        gc.set_threshold(*saved)
    assert threshold[2] >= 1000, threshold


def test_a_group_is_sized_from_one_value_and_encodes_all_of_them():
    coder = GroupedValuesCoder()
    group = GroupedValues([[(1, "a"), (2, "b")], [(3, "c")]])
    one = beam.coders.FastPrimitivesCoder().estimate_size((1, "a"))
    assert coder.estimate_size(group) == 3 * one
    assert list(coder.decode(coder.encode(group))) == [(1, "a"), (2, "b"), (3, "c")]


def test_the_groups_go_out_with_the_coder_that_sizes_them_cheaply():
    # Beam sizes sampled outputs of every step with the output's coder: under the default
    # one (FastPrimitivesCoder), each sampled group was pickled whole to be measured
    grouped = _stamped(TestPipeline()) | BundledGroupByKey()
    coder = beam.coders.registry.get_coder(grouped.element_type)
    assert isinstance(coder, beam.coders.TupleCoder)
    assert isinstance(coder.coders()[1], GroupedValuesCoder)
