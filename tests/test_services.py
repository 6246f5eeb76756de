"""The local services for tests (scripts/pubsub-emulator.sh, scripts/redis.sh) via real clients.

Ports differ from the scripts' defaults so that these tests never stop a service someone else
started on the default port.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from realtime_ai.io.pubsub_admin import EMULATOR_PROJECT, ensure_subscription

pytestmark = pytest.mark.integration

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
EXIT_UNAVAILABLE = 3  # scripts/lib.sh: the service cannot be installed on this machine
PUBSUB_PORT = 8195
REDIS_PORT = 6395


def _script(name: str, command: str, port: int) -> subprocess.CompletedProcess:
    # A cold Pub/Sub emulator build takes about a minute; nothing else comes near the limit.
    return subprocess.run(["bash", str(SCRIPTS / name), command, "--port", str(port)],
                          capture_output=True, text=True, timeout=600)


def _start(name: str, port: int) -> tuple[str, str]:
    """Start the service; return the (variable, value) of the one line its script prints."""
    started = _script(name, "start", port)
    if started.returncode == EXIT_UNAVAILABLE:
        print(started.stderr, file=sys.stderr)
        pytest.skip(f"{name}: {started.stderr.strip().splitlines()[-1]}")
    assert started.returncode == 0, started.stderr
    [line] = started.stdout.splitlines()
    variable, value = line.split("=", 1)
    return variable, value


def _stop(name: str, port: int) -> None:
    assert _script(name, "stop", port).returncode == 0
    status = _script(name, "status", port)
    assert status.returncode == 1 and "stopped" in status.stdout


@pytest.fixture(scope="module")
def pubsub_host():
    variable, host = _start("pubsub-emulator.sh", PUBSUB_PORT)
    assert (variable, host) == ("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{PUBSUB_PORT}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(variable, host)
        yield host
    _stop("pubsub-emulator.sh", PUBSUB_PORT)


@pytest.fixture(scope="module")
def redis_url():
    variable, url = _start("redis.sh", REDIS_PORT)
    assert (variable, url) == ("REDIS_URL", f"redis://127.0.0.1:{REDIS_PORT}/0")
    yield url
    _stop("redis.sh", REDIS_PORT)


def _pull_all(subscriber, subscription: str, expected: int) -> list:
    """Pull and ack until `expected` messages arrived or 20 s passed."""
    received = []
    deadline = time.monotonic() + 20
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=expected, timeout=5)
        if response.received_messages:
            subscriber.acknowledge(subscription=subscription,
                                   ack_ids=[m.ack_id for m in response.received_messages])
            received += [m.message for m in response.received_messages]
    return received


def test_pubsub_emulator_carries_messages_with_attributes(pubsub_host):
    from google.cloud import pubsub_v1

    topic = f"alerts-{uuid.uuid4().hex[:8]}"
    subscription = ensure_subscription(EMULATOR_PROJECT, topic, f"{topic}-reader")
    sent = {str(i): json.dumps({"transaction_id": f"t{i}", "risk": i / 50}).encode()
            for i in range(50)}
    with pubsub_v1.PublisherClient() as publisher:
        topic_path = publisher.topic_path(EMULATOR_PROJECT, topic)
        futures = [publisher.publish(topic_path, payload, event_id=key, kind="fraud_alert")
                   for key, payload in sent.items()]
        assert len({future.result(timeout=10) for future in futures}) == len(sent)
    with pubsub_v1.SubscriberClient() as subscriber:
        received = _pull_all(subscriber, subscription, len(sent))
        assert {m.attributes["event_id"]: m.data for m in received} == sent
        assert len(received) == len(sent)
        assert {m.attributes["kind"] for m in received} == {"fraud_alert"}


def test_pubsub_admin_is_idempotent_and_has_a_command_line(pubsub_host):
    topic = f"metrics-{uuid.uuid4().hex[:8]}"
    created = subprocess.run(
        [sys.executable, "-m", "realtime_ai.io.pubsub_admin", EMULATOR_PROJECT, topic, "reader"],
        capture_output=True, text=True, timeout=60, cwd=SCRIPTS.parent)
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == f"projects/{EMULATOR_PROJECT}/subscriptions/reader"
    assert ensure_subscription(EMULATOR_PROJECT, topic, "reader") == created.stdout.strip()


@pytest.mark.parametrize("name, port, service", [("pubsub-emulator.sh", PUBSUB_PORT, "pubsub_host"),
                                                  ("redis.sh", REDIS_PORT, "redis_url")])
def test_start_again_keeps_the_running_service(name, port, service, request):
    request.getfixturevalue(service)
    before = _script(name, "status", port)
    again = _script(name, "start", port)
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 1
    after = _script(name, "status", port)
    assert before.returncode == after.returncode == 0
    assert before.stdout == after.stdout  # same pid


def test_a_port_held_by_someone_else_is_a_failure_not_a_skip():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for name in ("pubsub-emulator.sh", "redis.sh"):
            started = _script(name, "start", port)
            assert started.returncode == 1 and started.stdout == ""
            assert "taken" in started.stderr


def test_redis_keeps_values_until_their_ttl_and_persists_nothing(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"
    assert client.set(key, b"cached answer", px=300)
    assert client.get(key) == b"cached answer"
    assert 0 < client.pttl(key) <= 300
    time.sleep(0.45)
    assert client.get(key) is None
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
