"""The Prism runner scripts/prism.sh builds: the one the command runs a Pub/Sub stream on, and
built with the fixes of its bundle wait and of its bundle requests (see the script)."""
import os
import pathlib
import time

import apache_beam as beam
import pytest
from apache_beam import coders
from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions
from apache_beam.runners.worker import sdk_worker
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from realtime_ai.pipelines import main
from realtime_ai.pipelines.main import prism_binary

pytestmark = pytest.mark.integration

BUNDLE_SECONDS = 3.0


def _prism_options(prism: str, *more: str) -> PipelineOptions:
    """A LOOPBACK job on `prism` with the settings the command gives a Prism job."""
    options = PipelineOptions(["--runner=PrismRunner", "--environment_type=LOOPBACK",
                               f"--prism_location={prism}", *more])
    main._prism_settings(options)
    return options


def test_the_command_runs_the_prism_the_script_built(prism):
    assert prism_binary() == prism


def _cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _prism_pid(binary: str) -> int:
    """The Prism this (the job's launching, and its worker's) process started."""
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            exe = os.readlink(stat.parent / "exe")
        except (OSError, ValueError):
            continue
        if parent == os.getpid() and os.path.samefile(exe, binary):
            return int(stat.parent.name)
    raise AssertionError(f"no {binary} started by this process")


class _MeasurePrismWhileBusy(beam.DoFn):
    """A bundle of a stage with no outputs that takes BUNDLE_SECONDS: Prism's CPU meanwhile,
    written to a file (an output would end the stage's lack of outputs)."""

    def __init__(self, binary: str, report: str):
        self._binary = binary
        self._report = report

    def process(self, element):
        pid = _prism_pid(self._binary)
        before = _cpu_seconds(pid)
        time.sleep(BUNDLE_SECONDS)
        pathlib.Path(self._report).write_text(str(_cpu_seconds(pid) - before))


class LongBundle:
    def __init__(self, prism: str, folder: pathlib.Path):
        """One bundle of BUNDLE_SECONDS on `prism`, with splits off as the command runs it
        (pipelines/main.py); the requests for its progress, counted in this process, which is
        also the job's SDK worker (LOOPBACK)."""
        report = folder / "prism_cpu_seconds"
        self.progress_requests = 0
        answer_progress = sdk_worker.SdkWorker.process_bundle_progress

        def count_and_answer(worker, *args):
            self.progress_requests += 1
            return answer_progress(worker, *args)

        options = _prism_options(prism)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sdk_worker.SdkWorker, "process_bundle_progress", count_and_answer)
            with beam.Pipeline(options=options) as pipeline:
                _ = (pipeline | beam.Create([1])
                     | beam.ParDo(_MeasurePrismWhileBusy(prism, str(report))))
        self.prism_cpu_seconds = float(report.read_text())


@pytest.fixture(scope="module")
def long_bundle(prism, tmp_path_factory) -> LongBundle:
    return LongBundle(prism, tmp_path_factory.mktemp("long_bundle"))


def test_prism_waits_for_a_long_bundle_without_spinning(long_bundle):
    # Unfixed, Prism spins on a core for the whole bundle: about BUNDLE_SECONDS of CPU.
    assert long_bundle.prism_cpu_seconds < BUNDLE_SECONDS / 6


def test_prism_asks_no_progress_of_a_bundle_it_may_not_split(long_bundle):
    # Unfixed, every 100 ms: about 30 requests.
    assert long_bundle.progress_requests <= 1


class _WriteThenReadWhenTheTimerFires(beam.DoFn):
    """Writes each key's value; reads it back in the timer's bundle, which Prism runs after the
    elements' bundle."""

    VALUE = ReadModifyWriteStateSpec("value", coders.VarIntCoder())
    LATER = TimerSpec("later", TimeDomain.WATERMARK)

    def process(self, element, value=beam.DoFn.StateParam(VALUE),
                later=beam.DoFn.TimerParam(LATER)):
        value.write(element[1])
        later.set(Timestamp(10))

    @on_timer(LATER)
    def on_later(self, key=beam.DoFn.KeyParam, value=beam.DoFn.StateParam(VALUE)):
        yield key, value.read()


def test_a_keys_state_is_read_from_the_sdks_cache_in_its_next_bundle(prism, monkeypatch):
    # Unfixed, Prism sends no cache token: the timer's bundle reads every key's state from
    # Prism again (one request per key, one after another).
    reads = []
    read_from_prism = sdk_worker.GrpcStateHandler.get_raw

    def count_and_read(handler, state_key, *args):
        reads.append(state_key)
        return read_from_prism(handler, state_key, *args)

    monkeypatch.setattr(sdk_worker.GrpcStateHandler, "get_raw", count_and_read)
    keys = [f"k{i}" for i in range(20)]
    with beam.Pipeline(options=_prism_options(prism, "--max_cache_memory_usage_mb=10")) as pipeline:
        values = (pipeline | beam.Create([(key, i) for i, key in enumerate(keys)])
                  | beam.ParDo(_WriteThenReadWhenTheTimerFires()))
        assert_that(values, equal_to([(key, i) for i, key in enumerate(keys)]))
    assert [key for key in reads if key.HasField("bag_user_state")] == []


def test_a_prism_job_gets_a_user_state_cache_unless_told():
    # Beam starts a LOOPBACK job's worker with none: the cache token above would go unused.
    options = PipelineOptions(["--runner=PrismRunner"])
    main._prism_settings(options)
    assert options.view_as(WorkerOptions).max_cache_memory_usage_mb == main.PRISM_STATE_CACHE_MB
    chosen = PipelineOptions(["--runner=PrismRunner", "--max_cache_memory_usage_mb=20"])
    main._prism_settings(chosen)
    assert chosen.view_as(WorkerOptions).max_cache_memory_usage_mb == 20
    elsewhere = PipelineOptions(["--runner=DirectRunner"])
    main._prism_settings(elsewhere)
    assert elsewhere.view_as(WorkerOptions).max_cache_memory_usage_mb == 0
