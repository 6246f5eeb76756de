"""The Prism runner scripts/prism.sh builds: the one the command runs a Pub/Sub stream on, and
built with the fixes of its bundle wait (see the script)."""
import os
import pathlib
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.worker import sdk_worker

from realtime_ai.pipelines.main import prism_binary

pytestmark = pytest.mark.integration

BUNDLE_SECONDS = 3.0


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

        options = PipelineOptions([
            "--runner=PrismRunner", f"--prism_location={prism}", "--environment_type=LOOPBACK",
            "--experiments=disable_prism_server_singleton",
            "--experiments=prism_disable_sdf_split"])
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
