"""The Prism runner scripts/prism.sh builds: the one the command runs a Pub/Sub stream on, and
built with the fix of its bundle wait (see the script)."""
import os
import pathlib
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

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


def test_prism_waits_for_a_long_bundle_without_spinning(prism, tmp_path):
    report = tmp_path / "prism_cpu_seconds"
    options = PipelineOptions(["--runner=PrismRunner", f"--prism_location={prism}",
                               "--environment_type=LOOPBACK",
                               "--experiments=disable_prism_server_singleton"])
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline | beam.Create([1])
             | beam.ParDo(_MeasurePrismWhileBusy(prism, str(report))))
    # Unfixed, Prism spins on a core for the whole bundle: about BUNDLE_SECONDS of CPU.
    assert float(report.read_text()) < BUNDLE_SECONDS / 6
