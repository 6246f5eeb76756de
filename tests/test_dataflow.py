"""The pipeline translates for Google Dataflow, in batch and in streaming, with no cloud:
`--dry_run=True` (Beam's TestOptions) builds the Dataflow job without submitting it."""
import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from realtime_ai.pipelines import main, options
from realtime_ai.pipelines.main import build_pipeline

GOOGLE = ["--runner=DataflowRunner", "--project=my-project", "--region=us-central1",
          "--temp_location=gs://my-bucket/tmp", "--dry_run=True",
          "--output=gs://my-bucket/out", "--alerts_topic=projects/my-project/topics/alerts"]
STEPS = {"ReadTransactions", "ParseTransactions", "CustomerHistory", "EnrichTransactions",
         "ReadMetrics", "ParseMetrics", "MetricStatistics", "ExplainAnomalies",
         "DashboardInsights", "WriteTransactions", "WriteMetrics", "WriteAlerts",
         "WriteInsights", "WriteDeadLetter", "PublishAlerts"}


def _translated(argv: list[str]):
    """(Dataflow job, the unique names of every transform in the job's pipeline)."""
    options = PipelineOptions([*GOOGLE, *argv])
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    job = pipeline.run().job
    names = {t.unique_name for t in job.proto_pipeline.components.transforms.values()}
    return job, names


def test_batch_job_reads_files_and_writes_parquet_files():
    job, names = _translated(["--transactions=gs://my-bucket/tx/*.jsonl",
                              "--metrics=gs://my-bucket/metrics/*.parquet"])
    assert job.proto.type.name == "JOB_TYPE_BATCH"
    assert STEPS <= {name.split("/")[0] for name in names}
    assert "ReadTransactions/ReadFiles/MatchFiles" in names
    assert any(name.startswith("WriteAlerts/WriteParquet") for name in names)


def test_streaming_job_reads_subscriptions_and_writes_windowed_files():
    job, names = _translated(["--streaming",
                              "--transactions=projects/my-project/subscriptions/tx",
                              "--metrics=projects/my-project/subscriptions/metrics"])
    assert job.proto.type.name == "JOB_TYPE_STREAMING"
    assert STEPS <= {name.split("/")[0] for name in names}
    assert "ReadTransactions/ReadPubSub" in names and "ReadMetrics/ReadPubSub" in names
    assert "WriteAlerts/WriteWindowFiles" in names
    assert not any(name.startswith("WriteAlerts/WriteParquet") for name in names)


@pytest.fixture
def no_storage_calls(monkeypatch):
    """gs:// inputs are listed before a run: no one answers here."""
    monkeypatch.setattr(options, "check_pattern_matches", lambda spec, name: None)


@pytest.mark.usefixtures("no_storage_calls")
def test_on_dataflow_the_command_returns_once_the_job_is_submitted(monkeypatch, capsys):
    from apache_beam.runners.dataflow.dataflow_runner import DataflowPipelineResult
    from apache_beam.runners.runner import PipelineResult

    def never(*args, **kwargs):
        raise AssertionError("waited for a Dataflow job")

    monkeypatch.setattr(DataflowPipelineResult, "wait_until_finish", never)
    monkeypatch.setattr(PipelineResult, "wait_until_finish", never)  # a --dry_run's result
    assert main.main([*GOOGLE, "--transactions=gs://my-bucket/tx/*.jsonl"]) == 0
    assert "Submitted Dataflow job" in capsys.readouterr().out


@pytest.mark.usefixtures("no_storage_calls")
def test_workers_run_the_template_image_the_launcher_runs_in(monkeypatch):
    monkeypatch.setenv(main.TEMPLATE_IMAGE_VARIABLE, "europe-docker.pkg.dev/p/r/realtime-ai:abc")
    result = main.run([*GOOGLE, "--transactions=gs://my-bucket/tx/*.jsonl"])
    environments = result.job.proto_pipeline.components.environments.values()
    assert any(b"europe-docker.pkg.dev/p/r/realtime-ai:abc" in e.payload for e in environments)
    given = main.run([*GOOGLE, "--transactions=gs://my-bucket/tx/*.jsonl",
                      "--sdk_container_image=gcr.io/p/other:1"])
    assert all(b"realtime-ai:abc" not in e.payload
               for e in given.job.proto_pipeline.components.environments.values())


def test_a_streaming_job_of_one_input_has_no_bounded_branch():
    # Before, the absent input's dataset was written from an empty Flatten: a bounded branch
    # that finishes in a streaming job, and Flink will not restore a savepoint of a job in
    # which some of a task's operators have finished ("mixed operator finished state").
    # The run writes that dataset's empty file at its end instead (write_empty_datasets).
    job, names = _translated(["--streaming",
                              "--transactions=projects/my-project/subscriptions/tx"])
    bounded = sorted(pcollection.unique_name for pcollection
                     in job.proto_pipeline.components.pcollections.values()
                     if pcollection.is_bounded == beam_runner_api_pb2.IsBounded.BOUNDED)
    assert bounded == []
    assert not any(name.startswith("WriteMetrics") for name in names)
    assert "WriteTransactions/WriteWindowFiles" in names


@pytest.mark.parametrize("runner, gathered", [("FlinkRunner", False), ("DirectRunner", True)])
def test_model_requests_are_gathered_in_state_except_on_flink(runner, gathered):
    # Beam's Flink runner closes bundles by time with whatever arrived: a gathering in keyed
    # state only added a timer round before every model call (benchmarks/flink_latency.py).
    options = PipelineOptions(["--streaming", f"--runner={runner}", "--output=/tmp/unused",
                               "--transactions=projects/my-project/subscriptions/tx",
                               "--llm_base_url=http://127.0.0.1:9/v1"])
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    names = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    assert ("EnrichTransactions/ScoreRisk/GatherForModel" in names) == gathered
    assert ("EnrichTransactions/ScoreRisk/HandOverToModel" in names) == (not gathered)
    # The deep analyses are asked in the scores' gathered bundles, or handed over again: in
    # ScoreRisk's bundles, which wait for all of their answers, a slow deep model held the
    # scoring back on Flink (payment alerts 24 s behind at 600 events/s with 3 s a call)
    assert not any(name.startswith("EnrichTransactions/AnalyseHighRisk/GatherForModel")
                   for name in names)
    assert ("EnrichTransactions/AnalyseHighRisk/HandOverToModel" in names) == (not gathered)


def test_a_dataset_made_by_one_step_is_written_without_a_flatten():
    # Prism runs each Flatten between two stages of its own: a one-input Flatten before a
    # dataset's write sent all its rows through Prism and back (benchmarks/pipeline_cost.py)
    options = PipelineOptions(["--output=/tmp/unused", "--transactions=/tmp/tx.jsonl",
                               "--metrics=/tmp/metrics.jsonl"])
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options)
    flattens = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()
                if t.spec.urn == "beam:transform:flatten:v1"}
    assert not {"AllTransactions", "AllMetrics", "AllInsights"} & flattens
    assert "AllAlerts" in flattens  # payments' and metrics' alerts
