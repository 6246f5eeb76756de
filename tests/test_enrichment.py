"""The async model-calling DoFn in batch and in streaming: nothing lost, windows kept."""
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.enrichment import AskModel

CONFIG = LlmConfig(backend="local", concurrency=3)


def _insight_data(n):
    return {"dashboard_id": f"d{n}", "window_start": "a", "window_end": "b",
            "metrics": [{"metric": "m", "count": 1, "mean": float(n), "min": 0.0,
                         "max": float(n), "last": 1.0, "anomalies": 0,
                         "max_anomaly_score": 0.0}]}


def test_batch_every_element_answered_even_beyond_the_concurrency_limit():
    with TestPipeline(runner="DirectRunner") as p:
        answered, dead = (p | beam.Create(range(25))
                          | AskModel(CONFIG, base.DASHBOARD_INSIGHT, base.FAST, _insight_data))
        assert_that(answered | beam.Map(lambda item: (item[0], item[1].answer["priority"])),
                    equal_to([(n, "low") for n in range(25)]), label="Answered")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


def test_streaming_answers_keep_their_timestamp_and_window():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    # Processing time moves before the watermark: gathered elements leave on their wait,
    # not on the watermark (the DirectRunner holds no watermark for a pending timer).
    stream = (TestStream()
              .add_elements([TimestampedValue(n, n * 10) for n in range(4)])
              .advance_processing_time(1)
              .advance_watermark_to(25)
              .add_elements([TimestampedValue(n, n * 10) for n in range(4, 7)])
              .advance_processing_time(1)
              .advance_watermark_to_infinity())
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        answered, _ = (p | stream | beam.WindowInto(FixedWindows(30))
                       | AskModel(CONFIG, base.DASHBOARD_INSIGHT, base.FAST, _insight_data,
                                  clock=lambda: 0.0))
        per_window = (answered
                      | beam.Map(lambda item: ("all", item[0]))
                      | beam.GroupByKey()
                      | beam.MapTuple(lambda _, ns: sorted(ns)))
        assert_that(per_window, equal_to([[0, 1, 2], [3, 4, 5], [6]]))
