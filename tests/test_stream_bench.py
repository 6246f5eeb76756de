"""benchmarks/stream_bench.py stops what it started when it is terminated."""
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO

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
