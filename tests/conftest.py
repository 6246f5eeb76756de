"""Fixtures shared by the integration tests: local services started by the project's scripts."""
import importlib.util
import os
import pathlib
import subprocess
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
UNAVAILABLE = 3  # scripts/lib.sh: the service cannot be installed on this machine


def benchmark_script(name: str):
    """benchmarks/NAME.py, loaded as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The folder Beam makes in the temp directory for each pipeline and removes only when it
# runs: graph checks, which build pipelines and never run them, left about seventy per
# `make test`. (A job server's `beam-temp*` folder is Beam's to remove when it stops the
# server at exit.)
BEAM_PIPELINE_TEMP = "beam-pipeline-temp*"


@pytest.fixture(scope="session", autouse=True)
def _no_empty_beam_pipeline_folders_left():
    temp = pathlib.Path(tempfile.gettempdir())
    before = set(temp.glob(BEAM_PIPELINE_TEMP))
    yield
    for path in set(temp.glob(BEAM_PIPELINE_TEMP)) - before:
        try:
            path.rmdir()  # only when empty: another session's job may still use it
        except OSError:
            pass


@pytest.fixture(scope="session")
def emulator():
    script = ["bash", "scripts/pubsub-emulator.sh"]
    was_running = subprocess.run([*script, "status"], cwd=REPO, capture_output=True).returncode
    started = subprocess.run([*script, "start"], cwd=REPO, capture_output=True, text=True)
    if started.returncode == UNAVAILABLE:  # e.g. no Go to build it with: the line says so
        pytest.skip(started.stderr)
    assert started.returncode == 0, started.stderr
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


def _service(script: str):
    """Starts the service; yields its NAME=VALUE settings; stops it after, if it started it.

    A service already running belongs to someone else on this shared machine: left running.
    """
    status = subprocess.run(["bash", script, "status"], cwd=REPO, capture_output=True)
    was_running = status.returncode == 0
    started = subprocess.run(["bash", script, "start"], cwd=REPO, capture_output=True, text=True,
                             timeout=900)
    if started.returncode == UNAVAILABLE:
        pytest.skip(started.stderr)
    assert started.returncode == 0, started.stderr
    yield dict(line.split("=", 1) for line in started.stdout.splitlines())
    if not was_running:
        subprocess.run(["bash", script, "stop"], cwd=REPO, check=True, capture_output=True)


@pytest.fixture(scope="session")
def prism() -> str:
    """The path of Beam's Prism runner binary, built once by scripts/prism.sh."""
    found = subprocess.run(["bash", "scripts/prism.sh", "path"], cwd=REPO, capture_output=True,
                           text=True, timeout=900)
    if found.returncode == UNAVAILABLE:
        pytest.skip(found.stderr)
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


@pytest.fixture(scope="session")
def flink():
    yield from _service("scripts/flink-cluster.sh")


@pytest.fixture(scope="session")
def kafka():
    yield from _service("scripts/kafka.sh")


def redis_on_own_port(port: str):
    """A Redis of the calling test module's own on `port` (never one someone else started):
    yields its redis:// URL, stops it after. Use it as a module fixture's body."""
    script = ["bash", "scripts/redis.sh"]
    started = subprocess.run([*script, "start", "--port", port], capture_output=True,
                             text=True, check=True, cwd=REPO)
    yield started.stdout.strip().split("=", 1)[1]
    subprocess.run([*script, "stop", "--port", port], check=True, cwd=REPO)


@pytest.fixture()
def llm_server(monkeypatch):
    """Our OpenAI-compatible test server (llm/server.py) on a free port, and a key in the
    environment for the client; stopped after the test."""
    from realtime_ai.llm import server

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    handle = server.start_in_thread(port=0)
    yield handle
    handle.stop()
