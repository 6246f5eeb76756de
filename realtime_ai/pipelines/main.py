"""The realtime-ai pipeline: `python -m realtime_ai.pipelines.main --help`."""
from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner.fn_runner import (
    ExtendedProvisionInfo,
    FnApiRunner,
)
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.portability.portable_runner import PipelineResult as PortableJobResult
from apache_beam.runners.runner import PipelineState

from realtime_ai.core import shadow
from realtime_ai.core.records import DATASET_KEYS, OUTPUT_SCHEMAS, SHADOW_DATASET, SHADOW_SCHEMA
from realtime_ai.core.replay import RedriveInputs
from realtime_ai.core.rows import LATE_FOR_INSIGHT, dead_letter_row
from realtime_ai.io.parquet import (
    WriteDataset,
    dataset_row_count,
    dataset_rows,
    write_empty_datasets,
)
from realtime_ai.io.publish import PublishDatasets, discard_staging, new_staging_folder
from realtime_ai.io.pubsub import ALERT_ATTRIBUTES, INSIGHT_ATTRIBUTES, PublishMessages
from realtime_ai.io.sources import ReadEvents, is_subscription
from realtime_ai.llm import accounting, retrieval
from realtime_ai.pipelines.flink_defaults import EXPANSION_SERVICE_JAR, flink_defaults
from realtime_ai.pipelines.flink_jobs import cancel_flink_jobs, flink_job_name
from realtime_ai.pipelines.options import (
    InvalidOptions,
    RealtimeAiOptions,
    options_parser,
    parse_options,
    reads_stream,
    runner_name,
)
from realtime_ai.transforms import sdk_workarounds
from realtime_ai.transforms.add_customer_features import AddCustomerFeatures
from realtime_ai.transforms.ask_model import NAMESPACE
from realtime_ai.transforms.dashboard_insights import DashboardInsights
from realtime_ai.transforms.enrich_transactions import EnrichTransactions
from realtime_ai.transforms.explain_anomalies import ExplainAnomalies
from realtime_ai.transforms.parse import ParseMetrics, ParseTransactions
from realtime_ai.transforms.playbook_context import WorkerPastAlerts
from realtime_ai.transforms.score_metrics import ScoreMetrics
from realtime_ai.transforms.shadow_model import ShadowModel


def build_pipeline(p: beam.Pipeline, options: PipelineOptions,
                   redriven: RedriveInputs | None = None, file_prefix: str = "part",
                   staging: str | None = None) -> dict[str, beam.PCollection]:
    """Adds every step to `p`; returns the row PCollection of each output dataset by name.

    `redriven`: dead letters of earlier runs, each sent in at the step it failed at (see
    pipelines/redrive.py); `file_prefix` names the batch output files. With a `staging`
    folder (a batch run), the datasets are written there and reach --output only once all
    are written (io/publish.py): replacing the previous run's, or beside them for a redrive;
    without, in place."""
    sdk_workarounds.remembered_dofn_specs()
    sdk_workarounds.prompt_bundle_ends()  # for the DirectRunner's and Prism's in-process worker
    opts = options.view_as(RealtimeAiOptions)
    streaming = options.view_as(StandardOptions).streaming
    grace = opts.window_grace_seconds if streaming else 0.0
    lateness = opts.allowed_lateness_seconds if streaming else 0.0
    # Beam's Flink runner closes a bundle after --max_bundle_time_mills with whatever arrived:
    # gathered in keyed state first, a request waited a timer round more (transforms/
    # ask_model.py; benchmarks/flink_latency.py).
    llm = dataclasses.replace(opts.llm_config(), gather_in_state=not _is_flink(options))
    native_pubsub = runner_name(options) in NATIVE_PUBSUB_RUNNERS
    kafka_beam_262 = kafka_expanded_by_beam_262(options)
    # A redrive's rows and alerts are of windows whose insights were made by the first run.
    live_windows = redriven is None
    redriven = redriven or RedriveInputs()
    schemas = dict(OUTPUT_SCHEMAS)
    if opts.shadow_fast_model:
        schemas[SHADOW_DATASET] = SHADOW_SCHEMA
    parts: dict[str, list[beam.PCollection]] = {name: [] for name in schemas}
    dead_letters = []

    def payloads(label: str, source: str, spec: str | None, lines: tuple[str, ...]):
        if spec:
            read = p | f"Read{label}" >> ReadEvents(
                spec, source, opts.event_time_attribute, opts.kafka_expansion_service,
                native_pubsub, opts.kafka_properties(), kafka_beam_262)
            if read.dead_letter is not None:
                dead_letters.append(read.dead_letter)
            return read.payloads
        return p | f"Redriven{label}" >> beam.Create(lines) if lines else None

    insight_inputs: dict[str, list[beam.PCollection]] = {"transactions": [], "alerts": []}
    featured = []
    if (transactions := payloads("Transactions", "transactions", opts.transactions,
                                 redriven.transaction_lines)) is not None:
        parsed = transactions | "ParseTransactions" >> ParseTransactions(opts.max_record_bytes)
        history, late = parsed.valid | "CustomerHistory" >> AddCustomerFeatures(
            opts.history_size, opts.ordering_settings())
        featured.append(history)
        dead_letters += [parsed.dead_letter, late]
    if redriven.featured:
        featured.append(p | "RedrivenFeatured" >> beam.Create(redriven.featured))
    if featured:
        rows, alerts, failed, scored = (
            _joined(featured, "AllFeatured", p) | "EnrichTransactions" >> EnrichTransactions(
                llm, opts.risk_threshold, opts.context, opts.context_refresh_seconds,
                _past_alerts(opts.past_alerts)))
        parts["transactions"].append(rows)
        parts["alerts"].append(alerts)
        dead_letters.append(failed)
        if opts.shadow_fast_model:
            parts[SHADOW_DATASET].append(scored | "ShadowModel" >> ShadowModel(
                llm, opts.shadow_fast_model, opts.shadow_share(), opts.risk_threshold))
        if live_windows:
            insight_inputs["transactions"].append(rows)
            insight_inputs["alerts"].append(alerts)

    scored_parts = []
    scored = None
    if (metrics := payloads("Metrics", "metrics", opts.metrics,
                            redriven.metric_lines)) is not None:
        parsed = metrics | "ParseMetrics" >> ParseMetrics(opts.max_record_bytes)
        scored, late = parsed.valid | "MetricStatistics" >> ScoreMetrics(
            opts.detector_settings(), opts.ordering_settings())
        scored_parts.append(scored)
        dead_letters += [parsed.dead_letter, late]
    if redriven.scored:  # explained again; their windows' insights were asked already
        scored_parts.append(p | "RedrivenScored" >> beam.Create(redriven.scored))
    if scored_parts:
        rows, alerts, failed = _joined(scored_parts, "AllScored", p) | "ExplainAnomalies" >> (
            ExplainAnomalies(llm, opts.context, opts.context_refresh_seconds))
        parts["metrics"].append(rows)
        parts["alerts"].append(alerts)
        dead_letters.append(failed)
        if live_windows:
            insight_inputs["alerts"].append(alerts)
    insight_inputs = {name: _joined(pcollections, f"All{name.title()}ForInsights", p)
                      for name, pcollections in insight_inputs.items() if pcollections}
    if scored is not None:
        insight_inputs["scored"] = scored
    if insight_inputs or redriven.windows:
        if not insight_inputs:  # no values to window: only insights of earlier runs to ask
            insight_inputs["scored"] = p | "NoMetricValues" >> beam.Create([])
        insights, insight_failed = insight_inputs | "DashboardInsights" >> DashboardInsights(
            llm, opts.insight_window_seconds, grace, lateness, redriven.windows)
        parts["insights"].append(insights)
        dead_letters.append(insight_failed)

    dead_letter_rows = (tuple(dead_letters) | "AllDeadLetters" >> beam.Flatten(pipeline=p)
                        | "DeadLetterRows" >> beam.Map(dead_letter_row))
    if streaming:
        # A record too late for its key is behind the watermark by definition: filed by
        # when it was dead-lettered, it lands in an open file window instead of being
        # dropped as late by the sink.
        dead_letter_rows = dead_letter_rows | "StampDeadLetterArrival" >> beam.Map(
            lambda row: beam.window.TimestampedValue(row, time.time()))
    parts["dead_letter"].append(dead_letter_rows)

    results, written = {}, {}
    for name, schema in schemas.items():
        if streaming and not parts[name]:
            # No input feeds it (a job of one input): an empty Flatten would be a bounded
            # branch, which finishes, and Flink restores no savepoint of a job in which some
            # of a task's operators have finished. The run's end writes its empty file.
            continue
        label = "".join(word.title() for word in name.split("_"))
        results[name] = _joined(parts[name], f"All{label}", p)
        written[name] = results[name] | f"Write{label}" >> WriteDataset(
            staging or opts.output, name, schema, opts.file_window_seconds, grace, lateness,
            file_prefix, DATASET_KEYS.get(name))
    if staging:
        written | "PublishDatasets" >> PublishDatasets(staging, opts.output,
                                                       replace=redriven is None)
    if opts.alerts_topic:
        results["alerts"] | "PublishAlerts" >> PublishMessages(opts.alerts_topic,
                                                               ALERT_ATTRIBUTES)
    if opts.insights_topic:
        results["insights"] | "PublishInsights" >> PublishMessages(opts.insights_topic,
                                                                   INSIGHT_ATTRIBUTES)
    return results


def _past_alerts(path: str | None) -> WorkerPastAlerts | None:
    """--past_alerts as each worker reads it, or None."""
    if not path:
        return None
    return WorkerPastAlerts(path, functools.partial(
        dataset_rows, columns=retrieval.PAST_ALERT_COLUMNS,
        required=retrieval.REQUIRED_PAST_ALERT_COLUMNS))


def _joined(pcollections: list[beam.PCollection], label: str,
            pipeline: beam.Pipeline) -> beam.PCollection:
    """One PCollection, flattened only when there are none or several. One is used as it is:
    that keeps the job's graph and its step names as they were, for updates of a running job,
    and Prism runs every Flatten itself, between two stages, so a one-input Flatten sent all
    its elements to Prism and back (before a dataset's write: a sixth of the wall time of a
    160k-record batch job on Prism)."""
    if len(pcollections) == 1:
        return pcollections[0]
    return tuple(pcollections) | label >> beam.Flatten(pipeline=pipeline)


def run(argv: list[str] | None = None, redriven: RedriveInputs | None = None,
        file_prefix: str = "part") -> beam.runners.runner.PipelineResult:
    """Validates the options (InvalidOptions on bad ones) and runs the pipeline to the end,
    or for --max_run_seconds when given. A Pub/Sub or Kafka input makes it a streaming job,
    which writes its outputs in place; a batch run replaces the outputs of an earlier run only
    when it succeeds, unless it is a redrive (`redriven`), which adds files named by
    `file_prefix` beside them."""
    options = parse_options(sys.argv[1:] if argv is None else argv,
                            require_input=redriven is None)
    opts = options.view_as(RealtimeAiOptions)
    _stream_on_prism(options)
    _prism_settings(options)
    _watch_job_without_deadline(options)
    _fill_in_runner_defaults(options)
    budget_plan = opts.rate_budget_plan()
    if budget_plan:
        logging.getLogger(__name__).warning("%s", budget_plan)
    if reads_stream(opts):
        options.view_as(StandardOptions).streaming = True
    staging = None if reads_stream(opts) else new_staging_folder(opts.output)
    pipeline = beam.Pipeline(runner=local_batch_runner(options), options=options)
    build_pipeline(pipeline, options, redriven, file_prefix, staging)
    try:
        result = pipeline.run()
        if _on_dataflow(options):
            return result  # submitted: it runs, and publishes, on Google's workers
        if opts.max_run_seconds is None:
            result.wait_until_finish()
            cancelled = False
        else:
            cancelled = _wait_then_cancel(result, opts.max_run_seconds)
    except Exception:  # the job failed; not an interrupt, after which a remote job goes on
        _keep_previous_outputs(staging, opts.output, "the run failed")
        raise
    if cancelled:
        _keep_previous_outputs(staging, opts.output, "--max_run_seconds stopped the run")
        if _is_flink(options):
            _cancel_on_flink(options.view_as(FlinkRunnerOptions).flink_master, result)
    if not (cancelled and staging):  # not a batch run that left the previous outputs
        # a dataset the run gave no rows for is still there to read, empty, with its schema
        write_empty_datasets(opts.output, OUTPUT_SCHEMAS, datetime.now(timezone.utc),
                             partitioned=staging is None)
    return result


def _keep_previous_outputs(staging: str | None, output: str, what: str) -> None:
    """Say that a batch run that did not finish left the previous outputs as they were, and
    remove what it wrote aside."""
    if staging and discard_staging(staging):
        logging.getLogger(__name__).error(
            "%s before it had written all its outputs: the datasets under %s are those of "
            "the previous run, unchanged", what, output)


# Set by templates/Dockerfile to the image's own name.
TEMPLATE_IMAGE_VARIABLE = "REALTIME_AI_IMAGE"

# Runners with a Pub/Sub reader of their own (Dataflow's acknowledges after a durable commit);
# on any other runner subscriptions are read by io/pubsub_read.py.
NATIVE_PUBSUB_RUNNERS = ("dataflowrunner", "dataflow", "bundlebaseddirectrunner")


def _is_flink(options: PipelineOptions) -> bool:
    return runner_name(options) in ("flinkrunner", "flink")


def kafka_expanded_by_beam_262(options: PipelineOptions) -> bool:
    """Whether KafkaIO is expanded by the Beam 2.62 expansion service of our local Flink job
    server (FlinkRunner's default, flink_defaults.py), which takes the read only in the shape
    it knows (io/sources.py read_kafka); any other runner or service gets Beam's own."""
    return _is_flink(options) and options.view_as(
        RealtimeAiOptions).kafka_expansion_service == str(EXPANSION_SERVICE_JAR)


def _on_dataflow(options: PipelineOptions) -> bool:
    """A Dataflow job runs on Google's workers: the command returns once the job is submitted,
    so a Flex Template's launcher (which runs it) is done in seconds rather than waiting out a
    batch job or timing out on a streaming one. Its state and counters are in the console."""
    return runner_name(options) in ("dataflowrunner", "dataflow")


# The fixes scripts/prism.sh builds Prism with (its FIXES): part of the binary's folder name.
PRISM_FIXES = "fixed3"


def prism_binary() -> str | None:
    """The Prism runner built by scripts/prism.sh for the pinned Beam version, if built."""
    path = os.path.expanduser(
        f"~/.cache/realtime-ai/prism-v{beam.__version__}-{PRISM_FIXES}/prism")
    return path if os.access(path, os.X_OK) else None


def _stream_on_prism(options: PipelineOptions) -> None:
    """A Pub/Sub stream on one machine runs on Beam's Prism runner, as Beam's own DirectRunner
    does wherever it can download Prism: the legacy streaming DirectRunner reads 10 messages
    a pull with the wall clock as its watermark, and falls behind at about 40 events/s."""
    opts = options.view_as(RealtimeAiOptions)
    if runner_name(options) not in ("", "directrunner", "direct") or not any(
            spec and is_subscription(spec) for spec in (opts.transactions, opts.metrics)):
        return
    prism = options.view_as(PrismRunnerOptions)
    prism.prism_location = prism.prism_location or prism_binary()
    if not prism.prism_location:
        raise InvalidOptions("a Pub/Sub stream runs locally on Beam's Prism runner: build it "
                             "once with `scripts/prism.sh path` (about 4 minutes) or give "
                             "--prism_location=BINARY")
    options.view_as(StandardOptions).runner = "PrismRunner"
    logging.getLogger(__name__).warning("reading Pub/Sub on one machine: running on Prism (%s)",
                                        prism.prism_location)


def local_batch_runner(options: PipelineOptions) -> FnApiRunner | None:
    """A batch job on the DirectRunner runs on Beam's FnApiRunner, always. Beam 2.77's
    DirectRunner first tries Prism, downloading Beam's own binary wherever GitHub can be
    reached: the same command would then run on a Prism without the fixes and settings
    `_prism_settings` gives ours (its dynamic splits ran a key twice at once) and at another
    cost per event, and where the download fails it leaves an empty beam-temp folder in the
    temp directory per run. None (the runner --runner names) for any other job."""
    if runner_name(options) not in ("", "directrunner", "direct") or options.view_as(
            StandardOptions).streaming:
        return None
    # what Beam's DirectRunner gives the FnApiRunner it falls back to: the job's options
    return FnApiRunner(provision_info=ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(
        pipeline_options=JobServiceHandle.encode_pipeline_options(
            options.get_all_options()))))


# The worker's user-state cache on Prism, as on our Flink workers (scripts/flink-cluster.sh).
PRISM_STATE_CACHE_MB = 100


def _prism_settings(options: PipelineOptions) -> None:
    """On Prism (Beam 2.77):
    - a job server of this job's own: Beam shares one per process, created by the first Prism
      job with that job's options, and a DirectRunner job in the same process first tries
      Prism without a binary (it would download one): the share would then be one that
      cannot start, for every later job;
    - no dynamic splits of a bundle: Prism splits a bundle that seems slow, and the split
      frees its keys while timers of the same keys are in the residual, so another bundle can
      run a key concurrently with the first (github.com/apache/beam/issues/35771): the keyed
      step's state written by one is lost to the other, and rows came out twice. Our Pub/Sub
      reader checkpoints by itself and needs no splits;
    - a user-state cache in the job's SDK worker (PRISM_STATE_CACHE_MB unless the command line
      sets another --max_cache_memory_usage_mb): Beam starts the worker of a LOOPBACK job with none,
      so every read of a keyed step's state went to Prism and back, one after another; with
      the cache token scripts/prism.sh makes Prism send, a key's state stays in the worker
      from one bundle to the next."""
    if runner_name(options) in ("prismrunner", "prism"):
        debug = options.view_as(DebugOptions)
        debug.add_experiment("disable_prism_server_singleton")
        debug.add_experiment("prism_disable_sdf_split")
        if options.get_all_options(drop_default=True).get("max_cache_memory_usage_mb") is None:
            options.view_as(WorkerOptions).max_cache_memory_usage_mb = PRISM_STATE_CACHE_MB


# How long the command may watch a job on a portable runner: a month, i.e. no deadline.
WATCH_JOB_SECONDS = 30 * 24 * 3600


def _watch_job_without_deadline(options: PipelineOptions) -> None:
    """Beam's PortableRunner (Prism, Flink; the DirectRunner when it hands a job to Prism)
    opens the job's state and message streams with --job_server_timeout (default 300 s) as
    their gRPC deadline, so the command's wait on any job that runs longer dies with
    DEADLINE_EXCEEDED and takes the job down (github.com/apache/beam/issues/35867): a
    streaming job on Prism stopped 310 s into `make bench-soak`. Unless the command line sets
    it, the deadline is a month; other runners ignore the option."""
    if options.get_all_options(drop_default=True).get("job_server_timeout") is None:
        options.view_as(PortableOptions).job_server_timeout = WATCH_JOB_SECONDS


def _cancel_on_flink(flink_master: str, result: beam.runners.runner.PipelineResult) -> None:
    """The Flink job server leaves a cancelled streaming job running: cancel it on the
    cluster too (see flink_jobs.py)."""
    # PortableRunner's result has no public accessor for its job id.
    beam_job_id = result._job_id
    try:
        cancelled = cancel_flink_jobs(flink_master, beam_job_id)
    except OSError as error:
        logging.getLogger(__name__).warning(
            "could not cancel job %s on the Flink cluster at %s: %s; cancel it there",
            flink_job_name(beam_job_id), flink_master, error)
        return
    if cancelled:
        logging.getLogger(__name__).warning("cancelled Flink job(s) %s", ", ".join(cancelled))


def _fill_in_runner_defaults(options: PipelineOptions) -> None:
    """--runner=FlinkRunner: the Flink version, job server and worker environment of
    scripts/flink-cluster.sh's cluster, where the command line leaves them unset, and a
    staging directory of the job's own. --runner=DataflowRunner inside our Flex Template
    image: that image as the workers' SDK container (templates/Dockerfile), so launcher and
    workers run the same pinned packages and workers install nothing."""
    if _on_dataflow(options):
        worker = options.view_as(WorkerOptions)
        worker.sdk_container_image = worker.sdk_container_image or os.environ.get(
            TEMPLATE_IMAGE_VARIABLE) or None
        return
    if not _is_flink(options):
        return
    given = options.get_all_options(drop_default=True)
    for name, value in flink_defaults().items():
        if given.get(name) is None:
            view = (FlinkRunnerOptions if name.startswith("flink_") else RealtimeAiOptions
                    if name.startswith("kafka_") else PortableOptions)
            setattr(options.view_as(view), name, value)
    if given.get("artifacts_dir") is None:
        options.view_as(JobServerOptions).artifacts_dir = _own_artifacts_dir()


# then the pid of the process whose job server stages its jars there, then a random part
ARTIFACTS_DIR_PREFIX = "realtime-ai-flink-artifacts-"


def _own_artifacts_dir() -> str:
    """A directory for the job server's staged jars (192 MB a job), removed at exit.

    By default they go under Beam's temp directory for the job server, which Beam removes at
    exit while the job server may still be deleting the same files for a cancelled job: the
    exit then fails with a traceback. Registered before the job server starts, this removal
    runs after Beam has stopped it. A process killed (SIGTERM, SIGKILL) runs no exit handler:
    the job servers and the directories of processes that are gone are removed here first.
    """
    _stop_job_servers_of_gone_processes(ARTIFACTS_DIR_PREFIX)
    _remove_directories_of_gone_processes(ARTIFACTS_DIR_PREFIX)
    path = tempfile.mkdtemp(prefix=f"{ARTIFACTS_DIR_PREFIX}{os.getpid()}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _stop_job_servers_of_gone_processes(prefix: str) -> None:
    """Stops (SIGTERM) the processes started with `--artifacts-dir` a temp directory named
    `prefix`PID-... whose process no longer runs: a job server (a JVM of about 400 MB) that
    a killed command left running, in a `make test` as after a supervisor's kill."""
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().decode(errors="replace").split("\0")
        except OSError:  # not a process, or gone meanwhile
            continue
        if "--artifacts-dir" not in arguments[:-1]:
            continue
        folder = arguments[arguments.index("--artifacts-dir") + 1]
        if _owner_gone(os.path.basename(folder.rstrip("/")), prefix):
            try:
                os.kill(int(entry), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass


def _remove_directories_of_gone_processes(prefix: str) -> None:
    """Removes the temp directories named `prefix`PID-... whose process no longer runs."""
    for name in os.listdir(tempfile.gettempdir()):
        if _owner_gone(name, prefix):
            shutil.rmtree(os.path.join(tempfile.gettempdir(), name), ignore_errors=True)


def _owner_gone(name: str, prefix: str) -> bool:
    """Whether `name` is `prefix`PID-... and process PID no longer runs."""
    pid = name.removeprefix(prefix).split("-", 1)[0]
    return name.startswith(prefix) and pid.isdigit() and not _running(int(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


CANCEL_WAIT_SECONDS = 60.0
CANCEL_POLL_SECONDS = 0.5


def _wait_then_cancel(result: beam.runners.runner.PipelineResult, seconds: float) -> bool:
    """Wait for the job for at most `seconds`, then cancel it; a job failure is raised.
    Whether it had to be cancelled."""
    # The DirectRunner waits only without a duration, so the wait runs beside us.
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
            outcome.append(None)
        except Exception as error:  # noqa: BLE001 - handed to the caller below
            outcome.append(error)

    waiter = threading.Thread(target=wait, name="wait-for-job", daemon=True)
    waiter.start()
    waiter.join(timeout=seconds)
    if outcome and outcome[0] is not None:
        raise outcome[0]
    if outcome:
        return False
    logging.getLogger(__name__).warning("--max_run_seconds=%s reached: cancelling the job",
                                        seconds)
    result.cancel()
    if isinstance(result, PortableJobResult):
        # Beam reads a portable job's messages in a thread that ends when the job service
        # closes the stream, a moment after the job's terminal state; the exit stops the job
        # service, and a thread still reading then prints a traceback. Our wait returns only
        # after that thread has ended (Beam joins it once the state stream ends).
        waiter.join(timeout=CANCEL_WAIT_SECONDS)
        return True
    # Until the job says it is cancelled, so that the exit does not cut the runner short.
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while not PipelineState.is_terminal(result.state) and time.monotonic() < deadline:
        time.sleep(CANCEL_POLL_SECONDS)
    return True


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    totals: dict[str, int] = {}
    for counter in query["counters"]:
        name = counter.key.metric.name
        # What was done, retried bundles included: attempted, which is at least committed on
        # a runner that reports both. Portable runners may report one half only, the other
        # as 0: Flink attempted values only; Prism, for a streaming job stopped by
        # --max_run_seconds, committed 9 and attempted 0 for one step, both for another.
        value = max(counter.committed or 0, counter.attempted or 0)
        totals[name] = totals.get(name, 0) + value
    return totals


def summary(output: str, result: beam.runners.runner.PipelineResult,
            with_shadow: bool = False) -> str:
    """Where each output dataset is, how many rows it holds, what the model calls cost and
    (`with_shadow`: the run asked a shadow model) how the shadow model compared."""
    lines = [f"Outputs under {output}/ (read with pyarrow.parquet.read_table(PATH)):"]
    for name in [*OUTPUT_SCHEMAS, *([SHADOW_DATASET] if with_shadow else [])]:
        path = f"{output}/{name}"
        rows = dataset_row_count(path)
        lines.append(f"  {path:<40} {rows:>8} rows")
    counters = _counters(result)
    duplicates = {source: counters.get(f"{source}_duplicates", 0)
                  for source in ("transactions", "metrics")}
    if any(duplicates.values()):
        lines.append("Redeliveries dropped (same event id within --dedupe_horizon_seconds): "
                     f"{duplicates['transactions']} transactions, "
                     f"{duplicates['metrics']} metric values")
    if counters.get("insight_late_values"):
        lines.append(f"Late for their insight window: {counters['insight_late_values']} values "
                     f"(in {output}/dead_letter, error \"{LATE_FOR_INSIGHT} ...\"; their rows "
                     "are written, the window's insight misses them)")
    lines += accounting.summary_lines(counters)
    if with_shadow:
        compared = dataset_rows(f"{output}/{SHADOW_DATASET}", shadow.SUMMARY_COLUMNS)
        lines.append(shadow.summarise(compared).line())
    return "\n".join(lines)


HELP_EPILOG = (
    "Beam's own options go alongside: --runner (DirectRunner, FlinkRunner, DataflowRunner, "
    "...), --streaming, --project, --region, --temp_location, ... (see Beam's documentation). "
    "Outputs: Parquet datasets transactions/, metrics/, alerts/, insights/ and dead_letter/ "
    "under --output (and shadow/ with --shadow_fast_model).")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-h" in args or "--help" in args:
        options_parser(prog="python -m realtime_ai.pipelines.main", epilog=HELP_EPILOG,
                       description="realtime-ai: streaming AI inference for transactions and "
                                   "metrics, as one Beam pipeline.").print_help()
        return 0
    try:
        result = run(argv)
    except InvalidOptions as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = PipelineOptions(argv)
    if _on_dataflow(options):
        job = result.job_id() if hasattr(result, "job_id") else "(a --dry_run: none)"
        print(f"Submitted Dataflow job {job}; outputs go under "
              f"{options.view_as(RealtimeAiOptions).output}/")
    else:
        opts = options.view_as(RealtimeAiOptions)
        print(summary(opts.output, result, with_shadow=bool(opts.shadow_fast_model)))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
