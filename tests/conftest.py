"""Fixtures shared by the integration tests: local services started by the project's scripts."""
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def emulator():
    script = ["bash", "scripts/pubsub-emulator.sh"]
    was_running = subprocess.run([*script, "status"], cwd=REPO, capture_output=True).returncode
    started = subprocess.run([*script, "start"], cwd=REPO, capture_output=True, text=True,
                             check=True)
    host = started.stdout.strip().split("=", 1)[1]
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    yield host
    if previous is None:
        del os.environ["PUBSUB_EMULATOR_HOST"]
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = previous
    if was_running != 0:  # leave nothing running that we started
        subprocess.run([*script, "stop"], cwd=REPO, check=True)
