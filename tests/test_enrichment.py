"""The model-calling DoFns in batch and in streaming: nothing lost, windows kept."""
import dataclasses
import pathlib
import subprocess
import sys
import textwrap

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue

from realtime_ai.core.replay import Replayable
from realtime_ai.llm import base, local_model, runner
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms import ask_model
from realtime_ai.transforms.ask_model import AskModel

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = LlmConfig(backend="local", concurrency=3)
# Any backend but the local one is asked through the event loop; here the local model's rules
# stand in for the remote model (see loop_backend).
LOOP_CONFIG = LlmConfig(backend="openai", concurrency=3)


@pytest.fixture()
def loop_backend(monkeypatch):
    """LOOP_CONFIG's requests are answered by the local model, through the event loop (the
    DirectRunner runs DoFns in this process)."""
    monkeypatch.setattr(ask_model, "shared_backend", lambda config: local_model.LocalBackend())


def _insight_data(n):
    return {"dashboard_id": f"d{n}", "window_start": "a", "window_end": "b",
            "metrics": [{"metric": "m", "count": 1, "mean": float(n), "min": 0.0,
                         "max": float(n), "last": 1.0, "anomalies": 0,
                         "max_anomaly_score": 0.0}]}


def _replayable(n):
    return Replayable(str(n), None)


@pytest.mark.parametrize("config", [CONFIG, LOOP_CONFIG], ids=["local", "loop"])
def test_batch_every_element_answered_even_beyond_the_concurrency_limit(config, loop_backend):
    with TestPipeline(runner="DirectRunner") as p:
        answered, dead = (p | beam.Create(range(25))
                          | AskModel(config, base.DASHBOARD_INSIGHT, base.FAST, _insight_data,
                                     _replayable))
        assert_that(answered | beam.Map(lambda answer: (answer.input,
                                                        answer.result.answer["priority"])),
                    equal_to([(n, "low") for n in range(25)]), label="Answered")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


@pytest.mark.parametrize("config", [CONFIG, LOOP_CONFIG], ids=["local", "loop"])
def test_streaming_answers_keep_their_timestamp_and_window(config, loop_backend):
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
                       | AskModel(config, base.DASHBOARD_INSIGHT, base.FAST, _insight_data,
                                  _replayable, clock=lambda: 0.0))
        per_window = (answered
                      | beam.Map(lambda item: ("all", item[0]))
                      | beam.GroupByKey()
                      | beam.MapTuple(lambda _, ns: sorted(ns)))
        assert_that(per_window, equal_to([[0, 1, 2], [3, 4, 5], [6]]))


def test_the_local_model_answers_in_the_bundle_not_through_the_event_loop(monkeypatch):
    def through_the_loop(coro):
        coro.close()
        raise AssertionError("the local model was asked through the event loop")

    monkeypatch.setattr(runner, "submit", through_the_loop)
    data = _insight_data(1)
    with TestPipeline(runner="DirectRunner") as p:
        answered, _ = (p | beam.Create([1])
                       | AskModel(CONFIG, base.DASHBOARD_INSIGHT, base.FAST, _insight_data,
                                     _replayable))
        assert_that(answered | beam.Map(lambda item: (item[1].answer, item[1].model)),
                    equal_to([(local_model.dashboard_insight(data), base.LOCAL_MODEL_LABEL)]))


def gathering_steps(pipeline) -> list[str]:
    """The unique names of the pipeline's GatherForModel steps."""
    return [transform.unique_name
            for transform in pipeline.to_runner_api().components.transforms.values()
            if transform.unique_name.endswith("/GatherForModel")]


def _gathers(config):
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = TestPipeline(runner="BundleBasedDirectRunner", options=options)
    _ = (p | TestStream().add_elements([1]).advance_watermark_to_infinity()
         | AskModel(config, base.DASHBOARD_INSIGHT, base.FAST, _insight_data,
                                     _replayable))
    return bool(gathering_steps(p))


def test_streaming_gathers_elements_for_the_event_loop_only():
    # Gathering fills the loop's request slots with one bundle; the local model has none.
    assert _gathers(LOOP_CONFIG) and not _gathers(CONFIG)


def test_streaming_answers_of_an_already_gathered_input_are_asked_in_its_bundles(loop_backend):
    # A second AskModel behind a first takes the first's answers as they come, in the first's
    # gathered bundles: nothing is gathered (or lost) twice.
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (TestStream()
              .add_elements([TimestampedValue(n, n * 10) for n in range(5)])
              .advance_processing_time(1)
              .advance_watermark_to_infinity())
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        first, _ = (p | stream
                    | "First" >> AskModel(LOOP_CONFIG, base.DASHBOARD_INSIGHT, base.FAST,
                                          _insight_data, _replayable, clock=lambda: 0.0))
        second, dead = first | "Second" >> AskModel(
            LOOP_CONFIG, base.DASHBOARD_INSIGHT, base.FAST, lambda item: _insight_data(item[0]),
            _replayable, clock=lambda: 0.0, already_gathered=True)
        assert_that(second | beam.Map(lambda item: (item[0][0], item[1] is not None)),
                    equal_to([(n, True) for n in range(5)]), label="Answered")
        assert_that(dead, equal_to([]), label="NoDeadLetters")
    assert gathering_steps(p) == ["First/GatherForModel"]


def test_streaming_input_handed_over_rather_than_gathered_is_answered_in_full(loop_backend):
    # gather_in_state=False (Flink): a Reshuffle, no keyed state and no timers, before the
    # model step; every element is still answered, each once.
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (TestStream()
              .add_elements([TimestampedValue(n, n * 10) for n in range(5)])
              .add_elements([TimestampedValue(n, n * 10) for n in range(5, 8)])
              .advance_watermark_to_infinity())
    config = dataclasses.replace(LOOP_CONFIG, gather_in_state=False)
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        answered, dead = (p | stream | AskModel(config, base.DASHBOARD_INSIGHT, base.FAST,
                                                _insight_data, _replayable))
        assert_that(answered | beam.Map(lambda item: (item[0], item[1] is not None)),
                    equal_to([(n, True) for n in range(8)]), label="Answered")
        assert_that(dead, equal_to([]), label="NoDeadLetters")
    names = {transform.unique_name
             for transform in p.to_runner_api().components.transforms.values()}
    assert gathering_steps(p) == []
    assert "AskModel/HandOverToModel" in names


def test_a_job_on_the_local_model_never_imports_the_openai_client():
    # A fresh process: the openai package (~700 modules) is not needed by the local model.
    script = textwrap.dedent("""
        import sys
        import apache_beam as beam
        from realtime_ai.core.replay import Replayable
        from realtime_ai.llm import base
        from realtime_ai.llm.base import LlmConfig
        from realtime_ai.transforms.ask_model import AskModel
        insight = {"dashboard_id": "d", "window_start": "a", "window_end": "b", "metrics": []}
        with beam.Pipeline(runner="DirectRunner") as p:
            _ = (p | beam.Create([1]) | AskModel(LlmConfig(backend="local"),
                                                 base.DASHBOARD_INSIGHT, base.FAST,
                                                 lambda _: insight,
                                                 lambda n: Replayable(str(n), None)))
        print(sorted(name for name in sys.modules if name.split(".")[0] == "openai")[:3])
    """)
    ran = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() == "[]"


def test_an_anomaly_explanation_is_asked_with_its_metrics_runbook(tmp_path):
    from datetime import datetime, timezone

    from realtime_ai.core.records import MetricRecord, MetricScore, ScoredMetric
    from realtime_ai.transforms.explain_anomalies import _AnomalyData

    record = MetricRecord(metric="db.connections", value=480.0,
                          event_time=datetime(2026, 1, 5, tzinfo=timezone.utc), timestamp="t",
                          metadata=(("service", "checkout-api"), ("dashboard_id", "d")))
    scored = ScoredMetric(record, MetricScore(z_score=9.0, anomaly_score=1.0, is_anomaly=True,
                                              rolling_mean=100.0, rolling_std=10.0,
                                              rolling_count=60))
    data = _AnomalyData(None, 300.0)(scored)
    assert data["runbooks"][0]["id"] == "RB-04" and data["metric"] == "db.connections"
    own = tmp_path / "playbook.json"  # a --context without runbooks: no context, not a wrong one
    own.write_text('[{"id": "X-1", "title": "Card testing", "text": "small payments"}]')
    assert _AnomalyData(str(own), 300.0)(scored)["runbooks"] == []


def _even_only_data(n):
    assert n % 2 == 0, f"{n} was asked"
    return _insight_data(n)


def _is_even(n):
    return n % 2 == 0


def _answered_or_none(item):
    return item[0], None if item[1] is None else item[1].answer["priority"]


@pytest.mark.parametrize("config", [CONFIG, LOOP_CONFIG], ids=["local", "loop"])
def test_batch_asks_only_what_asks_is_true_of_and_passes_the_rest_with_none(config,
                                                                             loop_backend):
    with TestPipeline(runner="DirectRunner") as p:
        answered, dead = (p | beam.Create(range(9))
                          | AskModel(config, base.DASHBOARD_INSIGHT, base.FAST, _even_only_data,
                                     _replayable, asks=_is_even))
        assert_that(answered | beam.Map(_answered_or_none),
                    equal_to([(n, "low" if n % 2 == 0 else None) for n in range(9)]),
                    label="Answered")
        assert_that(dead, equal_to([]), label="NoDeadLetters")


def test_streaming_passes_what_is_not_asked_without_gathering_it(loop_backend):
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = (TestStream().add_elements([TimestampedValue(n, n) for n in range(5)])
              .advance_processing_time(1).advance_watermark_to_infinity())
    with TestPipeline(runner="BundleBasedDirectRunner", options=options) as p:
        answered, _ = (p | stream
                       | AskModel(LOOP_CONFIG, base.DASHBOARD_INSIGHT, base.FAST,
                                  _even_only_data, _replayable, clock=lambda: 0.0,
                                  asks=_is_even))
        assert_that(answered | beam.Map(_answered_or_none),
                    equal_to([(n, "low" if n % 2 == 0 else None) for n in range(5)]))
