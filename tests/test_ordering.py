"""The keyed, event-time-ordered step on Beam: batch (grouped) and streaming (TestStream)."""
import dataclasses
import random
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from realtime_ai.core.features import CustomerProfile
from realtime_ai.core.keyed import KeyedSequence, KeyedStep, OrderingSettings
from realtime_ai.core.records import Transaction
from realtime_ai.transforms.add_customer_features import AddCustomerFeatures
from realtime_ai.transforms.keyed_in_order import InEventTimeOrder

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
LATENESS = 3600
TTL = 30 * 86400


@dataclasses.dataclass(frozen=True)
class Rec:
    id: str
    value: int


def running_trace() -> KeyedSequence:
    """Each output is the tuple of values seen so far for the key, so any misordering, loss or
    double processing shows."""
    return KeyedSequence(
        restore=lambda saved: list(saved or ()),
        advance=lambda seen, record: (seen.append(record.value), tuple(seen))[1],
        save=list,
        order_key=lambda record: (record.value, record.id),
        event_id=lambda record: record.id,
        record_to_plain=lambda record: [record.id, record.value],
        record_from_plain=lambda plain: Rec(*plain),
    )


def _in_order(lateness=LATENESS, ttl=TTL, horizon=LATENESS):
    step = KeyedStep(running_trace(), OrderingSettings.of_seconds(lateness, ttl, horizon))
    return InEventTimeOrder("test", lambda record: "k", step)


def _at(value):
    """A record at event time `value` seconds."""
    return TimestampedValue(Rec(f"id-{value}", value), value)


def _streaming_options():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


def test_batch_processes_each_key_in_event_time_order_whatever_the_input_order():
    values = list(range(30))
    random.Random(3).shuffle(values)
    with TestPipeline(runner="DirectRunner") as p:
        ordered = p | beam.Create(values) | beam.Map(_at) | _in_order()
        assert_that(ordered.outputs, equal_to([tuple(range(i + 1)) for i in range(30)]))


def test_batch_drops_redeliveries():
    with TestPipeline(runner="DirectRunner") as p:
        ordered = p | beam.Create([3, 1, 3, 2, 1]) | beam.Map(_at) | _in_order()
        assert_that(ordered.outputs, equal_to([(1,), (1, 2), (1, 2, 3)]))


def test_streaming_waits_for_the_watermark_before_processing_out_of_order_events():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([_at(30), _at(10)])
        .add_elements([_at(20)])
        .advance_watermark_to(25)
        .add_elements([_at(27)])
        .advance_watermark_to(100)
        .advance_watermark_to_infinity()
    )
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming_options()) as p:
        out = (p | stream | _in_order()).outputs
        assert_that(out, equal_to([(10,), (10, 20), (10, 20, 27), (10, 20, 27, 30)]))


def test_streaming_drops_redeliveries_waiting_or_processed():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([_at(10), _at(20), _at(10)])  # redelivered while waiting
        .advance_watermark_to(50)
        .add_elements([_at(20)])  # redelivered after it was processed
        .advance_watermark_to_infinity()
    )
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming_options()) as p:
        out = (p | stream | _in_order()).outputs
        assert_that(out, equal_to([(10,), (10, 20)]))


def test_late_records_within_lateness_are_used_and_later_ones_dead_lettered():
    stream = (
        TestStream()
        .advance_watermark_to(0)
        .add_elements([_at(100)])
        .advance_watermark_to(200)  # k is processed up to 100
        .add_elements([_at(95),  # 5 s behind: used
                       _at(20)])  # 80 s behind: too late
        .advance_watermark_to_infinity()
    )
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming_options()) as p:
        ordered = p | stream | _in_order(lateness=10, horizon=10)
        assert_that(ordered.outputs, equal_to([(100,), (100, 95)]), label="Used")
        errors = ordered.dead_letter | beam.Map(lambda dead: (dead.source, dead.error[:14]))
        assert_that(errors, equal_to([("test", "late: 80 s beh")]), label="Late")


GAPS = (0, 10, 20, 500, 510)
AFTER_GAPS = [(0,), (0, 10), (0, 10, 20), (500,), (500, 510)]


def test_idle_keys_start_afresh_after_the_ttl_in_batch():
    with TestPipeline(runner="DirectRunner") as p:
        out = (p | beam.Create(GAPS) | beam.Map(_at)
               | _in_order(lateness=0, ttl=100, horizon=0)).outputs
        assert_that(out, equal_to(AFTER_GAPS))


def test_idle_keys_start_afresh_after_the_ttl_in_streaming():
    stream = TestStream().advance_watermark_to(0)
    for value in GAPS:
        stream = stream.add_elements([_at(value)]).advance_watermark_to(value + 1)
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming_options()) as p:
        out = (p | stream | _in_order(lateness=0, ttl=100, horizon=0)).outputs
        assert_that(out, equal_to(AFTER_GAPS))


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


def _transaction_stream(txs):
    stream = TestStream().advance_watermark_to(T0.timestamp() - 1)
    for t in txs:
        stream = stream.add_elements([TimestampedValue(t, t.event_time.timestamp())])
    # past every event before the end: the legacy DirectRunner holds no watermark for pending
    # timers, so outputs of timers that fire only at infinity would be late for assert_that
    last = max(t.event_time for t in txs).timestamp()
    return stream.advance_watermark_to(last + 1).advance_watermark_to_infinity()


@pytest.mark.parametrize("streaming", [False, True])
def test_customer_features_match_pure_reference_for_shuffled_and_redelivered_input(streaming):
    txs = [_tx(i, minutes=7 * i, customer=f"c{i % 3}", amount=10.0 + i) for i in range(40)]
    delivered = txs + txs[5:12]  # redeliveries
    random.Random(11).shuffle(delivered)
    settings = OrderingSettings.of_seconds(LATENESS, TTL, 86400)
    options = _streaming_options() if streaming else PipelineOptions()
    with TestPipeline(runner="BundleBasedDirectRunner" if streaming else "DirectRunner",
                      options=options) as p:
        source = (p | _transaction_stream(delivered) if streaming else
                  p | beam.Create(delivered)
                  | beam.Map(lambda t: TimestampedValue(t, t.event_time.timestamp())))
        out = (source | AddCustomerFeatures(10, settings)).outputs | beam.Map(
            lambda ft: (ft.transaction.transaction_id, ft.features))
        assert_that(out, equal_to(_reference_features(txs, 10)))
