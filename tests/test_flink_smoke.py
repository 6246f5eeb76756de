"""A real Flink 1.19 cluster and Kafka broker, started by scripts/: a Beam job runs to the end."""
import glob
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    JobServerOptions,
    PipelineOptions,
    PortableOptions,
)
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from realtime_ai.pipelines import main
from realtime_ai.pipelines.flink_defaults import (
    RUNNER_JAR,
    flink_defaults,
    job_server_jar_exists,
)
from realtime_ai.pipelines.flink_jobs import active_job_ids, cancel_flink_jobs, flink_job_name

JOB_TIMEOUT_MS = 180_000  # a lost worker leaves a Flink job RUNNING forever


def _flink_flags() -> list[str]:
    return [f"--{name}={value}" for name, value in flink_defaults().items()]


def test_defaults_are_options_the_flink_runner_accepts():
    options = PipelineOptions(["--runner=FlinkRunner", *_flink_flags()])
    assert options.view_as(FlinkRunnerOptions).flink_version in (
        FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS)
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == (
        "EXTERNAL", "localhost:50000")


def test_the_job_server_stages_jars_in_a_directory_of_the_jobs_own(tmp_path):
    # not under Beam's job-server temp root, which Beam removes at exit while the job
    # server may still be removing a cancelled job's jars from it
    options = PipelineOptions(["--runner=FlinkRunner"])
    main._fill_in_runner_defaults(options)
    staging = options.view_as(JobServerOptions).artifacts_dir
    assert "realtime-ai-flink-artifacts-" in staging and glob.glob(staging)
    chosen = PipelineOptions(["--runner=FlinkRunner", f"--artifacts_dir={tmp_path}"])
    main._fill_in_runner_defaults(chosen)
    assert chosen.view_as(JobServerOptions).artifacts_dir == str(tmp_path)


def test_staged_jars_of_killed_commands_are_removed_by_the_next_one(tmp_path, monkeypatch):
    # a killed command runs no exit handler: its 192 MB of jars stayed in the temp directory
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    killed = tmp_path / f"{main.ARTIFACTS_DIR_PREFIX}{gone.pid}-x1"
    running = tmp_path / f"{main.ARTIFACTS_DIR_PREFIX}{os.getppid()}-x2"
    other = tmp_path / "someone-elses-1-x3"
    for folder in (killed, running, other):
        (folder / "jars").mkdir(parents=True)
    own = pathlib.Path(main._own_artifacts_dir())
    assert sorted(tmp_path.iterdir()) == sorted([own, running, other])
    assert own.name.startswith(f"{main.ARTIFACTS_DIR_PREFIX}{os.getpid()}-")


def test_the_job_server_of_a_killed_command_is_stopped_by_the_next_one(tmp_path, monkeypatch):
    # a killed command's job server (a JVM) went on running, reparented to init
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)", "job-server-launcher.jar",
               "--artifacts-dir"]
    orphan = subprocess.Popen([*sleeper, f"{tmp_path}/{main.ARTIFACTS_DIR_PREFIX}{gone.pid}-x1"])
    served = subprocess.Popen([*sleeper, f"{tmp_path}/{main.ARTIFACTS_DIR_PREFIX}{os.getpid()}-x2"])
    try:
        main._own_artifacts_dir()
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        time.sleep(0.5)
        assert served.poll() is None  # its command runs: left alone
    finally:
        for process in (orphan, served):
            process.kill()
            process.wait()


def test_a_beam_jobs_active_flink_jobs_are_found_by_its_name():
    assert flink_job_name("BeamApp-root-1125-7b52_fcab872c-4f0a") == "BeamApp-root-1125-7b52"
    assert flink_job_name("nightly_backfill_fcab872c-4f0a") == "nightly_backfill"
    overview = {"jobs": [{"jid": "a", "name": "job", "state": "RUNNING"},
                         {"jid": "b", "name": "job", "state": "CANCELED"},
                         {"jid": "c", "name": "other", "state": "RUNNING"},
                         {"jid": "d", "name": "job", "state": "RESTARTING"}]}
    assert active_job_ids(overview, "job") == ["a", "d"]


def test_a_job_on_an_embedded_cluster_has_nothing_to_cancel_on_a_cluster():
    # Beam's default master: no REST API to ask, and no ValueError from trying
    assert cancel_flink_jobs("[auto]", "BeamApp-root-1125-7b52_fcab872c-4f0a") == []
    assert cancel_flink_jobs("[local]", "BeamApp-root-1125-7b52_fcab872c-4f0a") == []


class _RunningTotalDoFn(beam.DoFn):
    TOTAL = ReadModifyWriteStateSpec("total", VarIntCoder())

    def process(self, element, total=beam.DoFn.StateParam(TOTAL)):
        key, amount = element
        running = (total.read() or 0) + amount
        total.write(running)
        yield key, running


@pytest.mark.integration
@pytest.mark.flink
def test_stateful_job_runs_to_the_end_on_the_cluster(flink, tmp_path):
    assert job_server_jar_exists()
    amounts = [("alice", 5), ("bob", 1), ("alice", 7), ("carol", 2), ("bob", 4), ("alice", 1)]
    options = PipelineOptions(["--runner=FlinkRunner", f"--flink_master={flink['FLINK_MASTER']}",
                               *_flink_flags()])
    pipeline = beam.Pipeline(options=options)
    _ = (pipeline
         | beam.Create(amounts)
         | "RunningTotal" >> beam.ParDo(_RunningTotalDoFn())
         | "Largest" >> beam.CombinePerKey(max)
         | beam.MapTuple(lambda key, total: f"{key},{total}")
         | beam.io.WriteToText(str(tmp_path / "totals")))
    started = time.monotonic()
    result = pipeline.run()
    state = result.wait_until_finish(duration=JOB_TIMEOUT_MS)
    if state != PipelineState.DONE:
        result.cancel()
    assert state == PipelineState.DONE
    print(f"flink smoke job: {time.monotonic() - started:.1f} s")
    lines = []
    for path in glob.glob(str(tmp_path / "totals*")):
        with open(path, encoding="utf-8") as shard:
            lines += shard.read().split()
    # The largest running total per key is the key's sum: state carried across elements.
    assert sorted(lines) == ["alice,13", "bob,5", "carol,2"]


@pytest.mark.integration
@pytest.mark.flink
def test_the_taskmanager_keeps_the_jobs_jars_in_the_clusters_own_folder(flink):
    # In /tmp, every TaskManager that did not exit cleanly left its folder there: 192 MB of a
    # job's jars per job (scripts/flink-cluster.sh empties its own on start and stop).
    run = pathlib.Path.home() / ".cache/realtime-ai/run/flink"
    logs = glob.glob(str(run / "log" / "flink-*-taskexecutor-*.log"))
    found = re.findall(r"Using working directory: WorkingDirectory\((.+)\)",
                       "".join(pathlib.Path(log).read_text() for log in logs))
    assert found and pathlib.Path(found[-1]).parent == run / "tmp"


@pytest.mark.integration
@pytest.mark.flink
def test_kafka_broker_creates_topics(kafka):
    assert kafka["KAFKA_BOOTSTRAP"] == "127.0.0.1:9092"
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(["bash", "scripts/kafka.sh", "topic", topic], capture_output=True,
                             text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    assert f"Topic: {topic}" in created.stdout and "PartitionCount: 1" in created.stdout


def _service_pids(script: str) -> dict[str, int]:
    """Each process `script status` reports as running, by the name it gives it."""
    status = subprocess.run(["bash", script, "status"], capture_output=True, text=True,
                            check=True).stdout
    return {name: int(pid) for name, pid in
            re.findall(r"^(.+?) running\b.*\(pid (\d+)\)$", status, re.M)}


@pytest.mark.integration
@pytest.mark.flink
def test_the_jvms_beside_the_python_workers_compile_with_c1_only(flink, kafka):
    # A freshly started broker's and JobManager's C2 compiling took the cores a job's first
    # seconds needed (scripts/kafka.sh, scripts/flink-cluster.sh)
    pids = _service_pids("scripts/flink-cluster.sh") | _service_pids("scripts/kafka.sh")
    for name in ("flink standalonesession", "flink taskexecutor", "kafka"):
        flags = pathlib.Path(f"/proc/{pids[name]}/cmdline").read_bytes().split(b"\0")
        assert b"-XX:TieredStopAtLevel=1" in flags, name


def _bytecode(jar, class_name: str, method: str) -> list[str]:
    """The invoked methods' names, in order, in `method` of `class_name` in `jar` (javap)."""
    listing = subprocess.run(["javap", "-c", "-p", "-cp", str(jar), class_name],
                             capture_output=True, text=True, check=True).stdout
    body = listing.split(f" {method}(", 1)[1].split("\n\n", 1)[0]
    return [line.split("Method ", 1)[1].split(":", 1)[0].rsplit(".", 1)[-1]
            for line in body.splitlines() if "// Method " in line or "// InterfaceMethod " in line]


def test_the_jobs_flink_runner_passes_a_stages_watermark_on_between_bundles(flink):
    # scripts/flink-cluster.sh's two fixes, in the runner jar the job server stages with jobs
    package = "org.apache.beam.runners.flink.translation.wrappers.streaming."
    finished = _bytecode(RUNNER_JAR, package + "ExecutableStageDoFnOperator",
                         "finishBundleCallback")
    assert finished[0] == "updateOutputWatermark", finished
    watermark = _bytecode(RUNNER_JAR, package + "DoFnOperator", "processInputWatermark")
    assert watermark.index("maybeEmitWatermark") < watermark.index("advanceWatermark"), watermark
