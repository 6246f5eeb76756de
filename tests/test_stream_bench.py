"""benchmarks/stream_bench.py stops what it started when it is terminated."""
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, benchmark_script

PORT = 8097  # an emulator port of this test's own
EMULATOR = ["bash", "scripts/pubsub-emulator.sh"]


@pytest.mark.integration
def test_a_terminated_benchmark_stops_the_emulator_it_started(tmp_path):
    assert subprocess.run([*EMULATOR, "status", "--port", str(PORT)], cwd=REPO,
                          capture_output=True).returncode == 1  # not running: ours to start
    bench = subprocess.Popen(
        [sys.executable, "benchmarks/stream_bench.py", "--rates", "10", "--seconds", "60",
         f"--emulator-port={PORT}", f"--work={tmp_path}"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in bench.stdout:  # the emulator is up and the first rate is starting
            seen.append(line)
            if line.startswith("rate 10/s"):
                break
        else:
            pytest.fail("".join(seen))
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        bench.kill()
        stopped = subprocess.run([*EMULATOR, "status", "--port", str(PORT)], cwd=REPO,
                                 capture_output=True, text=True)
        subprocess.run([*EMULATOR, "stop", "--port", str(PORT)], cwd=REPO, capture_output=True)
    assert stopped.returncode == 1, stopped.stdout


def test_cpu_the_host_took_is_reported_as_stolen_not_as_busy():
    # /proc/stat's cpu line: user nice system idle iowait irq softirq steal guest guest_nice
    stream_bench = benchmark_script("stream_bench")
    ticks = stream_bench.CLOCK_TICKS
    busy, stolen = stream_bench.machine_cpu_seconds(
        f"cpu  {100 * ticks} 0 {50 * ticks} {1000 * ticks} {10 * ticks} 0 {5 * ticks} "
        f"{45 * ticks} 0 0")
    assert (busy, stolen) == (155.0, 45.0)
