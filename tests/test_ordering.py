"""The event-time-ordered stateful DoFn, in batch and in streaming (TestStream)."""
import random
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from realtime_ai.records import Transaction
from realtime_ai.transforms.features import CustomerProfile
from realtime_ai.transforms.history import AddCustomerFeatures
from realtime_ai.transforms.ordering import KeyedSequence, OrderedByKey, split_ready

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
LATENESS = 3600
TTL = 30 * 86400


def _running_trace():
    """Each output is the list of values seen so far for the key: exposes any misordering."""
    return KeyedSequence(
        restore=lambda saved: list(saved or ()),
        advance=lambda seen, value: (seen.append(value), tuple(seen))[1],
        save=tuple,
        order_key=lambda value: (value,),
    )


def test_split_ready_sorts_and_splits_at_fire_time():
    ready, waiting = split_ready([(5, (1,), "c"), (1, (2,), "b"), (1, (1,), "a")], 1)
    assert [e[2] for e in ready] == ["a", "b"]
    assert [e[2] for e in waiting] == ["c"]


def test_batch_processes_each_key_in_event_time_order_whatever_the_input_order():
    values = list(range(30))
    random.Random(3).shuffle(values)
    expected = [("k", tuple(range(i + 1))) for i in range(30)]
    with TestPipeline(runner="DirectRunner") as p:
        out = (
            p
            | beam.Create(values)
            | beam.Map(lambda v: TimestampedValue(("k", v), 1000 + v))
            | OrderedByKey(_running_trace(), False, LATENESS, TTL)
        ).outputs | beam.Map(lambda trace: ("k", trace))
        assert_that(out, equal_to(expected))


def test_streaming_waits_for_the_watermark_before_processing_out_of_order_events():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(("k", 30), 30), TimestampedValue(("k", 10), 10)])
        .add_elements([TimestampedValue(("k", 20), 20)])
        .advance_watermark_to(25)
        .add_elements([TimestampedValue(("k", 27), 27)])
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        out = (p | stream | OrderedByKey(_running_trace(), True, LATENESS, TTL)).outputs
        assert_that(out, equal_to([(10,), (10, 20), (10, 20, 27), (10, 20, 27, 30)]))


def _tx(i, minutes, customer="c1", amount=10.0):
    return Transaction(
        transaction_id=f"tx-{i:03d}", customer_id=customer, amount=amount, currency="EUR",
        merchant="m", merchant_category="groceries", country="DE", channel="pos",
        event_time=T0 + timedelta(minutes=minutes))


def _reference_features(txs, history_size):
    """Features computed by the pure code over each customer's transactions in time order."""
    profiles = {}
    rows = []
    for t in sorted(txs, key=lambda t: t.event_time):
        profile = profiles.setdefault(t.customer_id, CustomerProfile(history_size))
        rows.append((t.transaction_id, profile.advance(t).features))
    return rows


@pytest.mark.parametrize("streaming", [False, True])
def test_customer_features_match_pure_reference_for_shuffled_input(streaming):
    txs = [_tx(i, minutes=7 * i, customer=f"c{i % 3}", amount=10.0 + i) for i in range(40)]
    shuffled = list(txs)
    random.Random(11).shuffle(shuffled)
    with TestPipeline(runner="DirectRunner") as p:
        out = (
            p
            | beam.Create(shuffled)
            | beam.Map(lambda t: TimestampedValue(t, t.event_time.timestamp()))
            | AddCustomerFeatures(10, streaming, LATENESS, TTL)
        )[0] | beam.Map(lambda ft: (ft.transaction.transaction_id, ft.features))
        assert_that(out, equal_to(_reference_features(txs, 10)))


def _streaming_options():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def test_late_records_within_lateness_are_used_and_later_ones_dead_lettered():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([TimestampedValue(("k", 100), 100)])
        .advance_watermark_to(200)  # k is processed up to 100
        .add_elements([TimestampedValue(("k", 95), 95),  # 5 s behind: used
                       TimestampedValue(("k", 20), 20)])  # 80 s behind: too late
        .advance_watermark_to_infinity()
    )
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming_options()) as p:
        ordered = p | stream | OrderedByKey(_running_trace(), True, 10, TTL)
        assert_that(ordered.outputs, equal_to([(100,), (100, 95)]), label="Used")
        assert_that(ordered.late, equal_to([(20, 80.0)]), label="Late")


def _gap_trace():
    return [TimestampedValue(("k", t), t) for t in (0, 10, 20, 500, 510)]


def test_idle_keys_start_afresh_after_the_ttl_in_batch():
    with TestPipeline(runner="DirectRunner") as p:
        out = (p | beam.Create([0, 10, 20, 500, 510])
               | beam.Map(lambda t: TimestampedValue(("k", t), t))
               | OrderedByKey(_running_trace(), False, LATENESS, 100)).outputs
        assert_that(out, equal_to([(0,), (0, 10), (0, 10, 20), (500,), (500, 510)]))


def test_idle_keys_start_afresh_after_the_ttl_in_streaming():
    stream = TestStream().advance_watermark_to(0)
    for element in _gap_trace():
        stream = stream.add_elements([element]).advance_watermark_to(element.timestamp + 1)
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming_options()) as p:
        out = (p | stream | OrderedByKey(_running_trace(), True, LATENESS, 100)).outputs
        assert_that(out, equal_to([(0,), (0, 10), (0, 10, 20), (500,), (500, 510)]))
