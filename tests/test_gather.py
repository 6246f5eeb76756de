"""Streaming: small bundles gathered into one bundle of model requests, timestamps kept."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import GlobalWindow, TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from realtime_ai.core.replay import Replayable
from realtime_ai.llm import base, server
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import AskModel
from realtime_ai.transforms.gather import GatherForModel
from tests.test_llm_client import DATA


def _replayable(element):
    return Replayable(repr(element), None)


def _test_stream_clock():  # the TestStream's processing time starts at 0
    return 0.0


def _risk_data(n):
    return {**DATA, "transaction": {**DATA["transaction"], "transaction_id": f"tx-{n}"}}


def _streaming():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return options


class _Bundles(beam.DoFn):
    """Emits each bundle's (value, timestamp) pairs as one tuple."""

    def start_bundle(self):
        self._seen = []

    def process(self, value, timestamp=beam.DoFn.TimestampParam):
        self._seen.append((value, int(timestamp)))

    def finish_bundle(self):
        if self._seen:
            yield WindowedValue(tuple(sorted(self._seen)), MIN_TIMESTAMP, [GlobalWindow()])


def _one_by_one(stream, values):
    for value in values:
        stream = stream.add_elements([TimestampedValue(value, value)])
    return stream


def test_elements_leave_together_at_capacity_watermark_or_wait_with_their_timestamps():
    stream = _one_by_one(TestStream(), [0, 10, 20])  # capacity reached
    stream = _one_by_one(stream, [30, 40]).advance_watermark_to(35)  # the oldest's time
    stream = _one_by_one(stream, [50]).advance_processing_time(200)  # waited long enough
    stream = stream.advance_watermark_to_infinity()
    with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming()) as p:
        bundles = (p | stream
                   | GatherForModel(3, max_wait_seconds=100, clock=_test_stream_clock, shards=1)
                   | beam.ParDo(_Bundles()))
        assert_that(bundles, equal_to([((0, 0), (10, 10), (20, 20)),
                                       ((30, 30), (40, 40)),
                                       ((50, 50),)]))


@pytest.mark.integration
def test_one_element_bundles_are_asked_together():
    """Without gathering, every TestStream event is a bundle that waits for its one answer
    alone: the requests never overlap."""
    handle = server.start_in_thread(port=0, latency_ms=300)
    config = LlmConfig(backend="openai", base_url=handle.base_url, fast_model="small")
    stream = _one_by_one(TestStream(), range(8)).advance_processing_time(1)
    try:
        with TestPipeline(runner="BundleBasedDirectRunner", options=_streaming()) as p:
            answered, dead = (p | stream.advance_watermark_to_infinity()
                              | AskModel(config, base.TRANSACTION_RISK, base.FAST,
                                         _risk_data, _replayable,
                                         clock=_test_stream_clock))
            assert_that(answered | beam.Map(lambda item: item[0]), equal_to(list(range(8))))
            assert_that(dead, equal_to([]), label="NoDeadLetters")
    finally:
        handle.stop()
    assert handle.stats["requests"] == 8
    # Requests in flight together at the server, not wall time: a busy machine (CI runs on
    # two shared cores) made a "faster than 8 x 300 ms" check fail with the requests gathered.
    assert handle.stats["max_in_flight"] >= 2
