"""ReadPubSubPayloads on Beam's Prism runner, streaming from the Pub/Sub emulator: every
message once, acknowledged after its bundle commits, timestamped from an attribute or its
publish time, and a watermark that closes event-time windows; cancel stops the job."""
import json
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState
from apache_beam.transforms.window import FixedWindows
from apache_beam.utils.windowed_value import PaneInfoTiming

from realtime_ai.io.pubsub_admin import EMULATOR_PROJECT, ensure_subscription
from realtime_ai.io.pubsub_read import ReadPubSubPayloads

ACK_DEADLINE_SECONDS = 10  # Pub/Sub's minimum: unacknowledged messages come back this soon
BACKLOG, LIVE = 1500, 500  # published before the job starts, and while it runs
TIMEOUT_SECONDS = 45
ATTRIBUTE_CASES = [  # (event_time attribute, payload, expected timestamp or None: publish time)
    ("2026-01-06T15:30:00Z", b"rfc3339", 1767713400.0),
    ("2026-01-06T16:30:01.5+01:00", b"rfc3339 with offset", 1767713401.5),
    ("1767713402000", b"millis", 1767713402.0),
    ("yesterday", b"unreadable", None),
    (None, b"\xff not utf-8", None),
]


class _WriteLines(beam.DoFn):
    """Appends one JSON line per element to a file (the job runs in this process: LOOPBACK)."""

    def __init__(self, path):
        self._path = str(path)

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                pane=beam.DoFn.PaneInfoParam):
        with open(self._path, "a") as out:
            out.write(json.dumps({"value": element, "timestamp": float(timestamp),
                                  "on_time": pane.timing == PaneInfoTiming.ON_TIME}) + "\n")


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _settled(folder) -> bool:
    """Every window counted (the watermark passed them all: the last one by the idle rule),
    and nothing new for longer than the ack deadline: a message never acknowledged would
    have come again by then."""
    elements = folder / "elements.jsonl"
    return (sum(w["value"] for w in _lines(folder / "windows.jsonl")) >= BACKLOG + LIVE
            and time.time() - elements.stat().st_mtime > ACK_DEADLINE_SECONDS + 2)


def _publish(topic, count, first):
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    futures = [publisher.publish(topic, json.dumps({"i": i}).encode())
               for i in range(first, first + count)]
    for future in futures:
        future.result(timeout=30)


@pytest.mark.integration
def test_prism_reads_each_message_once_with_timestamps_and_watermark(
        prism, emulator, tmp_path):  # prism first: without Go it skips, not fails
    from google.cloud import pubsub_v1

    name = f"prism-{uuid.uuid4().hex[:8]}"
    topics = {kind: f"projects/{EMULATOR_PROJECT}/topics/{name}-{kind}"
              for kind in ("stream", "attributes")}
    subscriptions = {kind: ensure_subscription(EMULATOR_PROJECT, f"{name}-{kind}",
                                               f"{name}-{kind}-job", ACK_DEADLINE_SECONDS)
                     for kind in topics}
    _publish(topics["stream"], BACKLOG, 0)
    publisher = pubsub_v1.PublisherClient()
    for attribute, payload, _ in ATTRIBUTE_CASES:
        attributes = {"event_time": attribute} if attribute else {}
        publisher.publish(topics["attributes"], payload, **attributes).result(timeout=30)

    pipeline = beam.Pipeline(options=PipelineOptions([
        "--runner=PrismRunner", f"--prism_location={prism}", "--streaming",
        "--prism_log_level=warn",
        # not Beam's per-process job server, which an earlier DirectRunner test left unusable
        "--experiments=disable_prism_server_singleton"]))
    payloads = pipeline | "Stream" >> ReadPubSubPayloads(subscriptions["stream"])
    payloads | "Elements" >> beam.ParDo(_WriteLines(tmp_path / "elements.jsonl"))
    (payloads
     | beam.WindowInto(FixedWindows(5))
     | beam.combiners.Count.Globally().without_defaults()
     | "Windows" >> beam.ParDo(_WriteLines(tmp_path / "windows.jsonl")))
    (pipeline
     | "Attributes" >> ReadPubSubPayloads(subscriptions["attributes"], "event_time")
     | beam.Reshuffle()  # else Prism spins a core: see realtime_ai/io/pubsub_read.py
     | "Timestamps" >> beam.ParDo(_WriteLines(tmp_path / "timestamps.jsonl")))
    result = pipeline.run()
    try:
        time.sleep(2)
        _publish(topics["stream"], LIVE, BACKLOG)
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not _settled(tmp_path) and time.monotonic() < deadline:
            assert result.state == PipelineState.RUNNING
            time.sleep(0.5)
    finally:
        result.cancel()

    numbers = sorted(json.loads(e["value"])["i"] for e in _lines(tmp_path / "elements.jsonl"))
    assert numbers == list(range(BACKLOG + LIVE))  # each message once: none redelivered
    windows = _lines(tmp_path / "windows.jsonl")
    assert sum(w["value"] for w in windows) == BACKLOG + LIVE
    assert all(w["on_time"] for w in windows)  # none fired late: the watermark held for them

    published_by = time.time()
    timestamps = {t["value"]: t["timestamp"] for t in _lines(tmp_path / "timestamps.jsonl")}
    for _, payload, expected in ATTRIBUTE_CASES:
        text = payload.decode("utf-8", errors="replace")
        if expected is None:  # the publish time
            assert published_by - 120 < timestamps[text] < published_by, text
        else:
            assert timestamps[text] == expected, text

    stopped = time.monotonic() + 30
    while result.state != PipelineState.CANCELLED and time.monotonic() < stopped:
        time.sleep(0.5)
    assert result.state == PipelineState.CANCELLED
