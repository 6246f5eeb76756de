"""Publishing rows to Pub/Sub topics, as JSON with attributes.

We publish with the google-cloud-pubsub client from a DoFn rather than Beam's WriteToPubSub:
on the DirectRunner that transform forces the legacy bundle-based runner, which cannot run
this pipeline's event-time timers in batch, and its id_label works on no Python runner but
Dataflow. Messages are published as the bundle goes and awaited in finish_bundle; a bundle
that fails is retried by Beam and republished, so delivery is at least once and readers
dedupe on an id attribute (alert_id for alerts).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from realtime_ai.core.rows import Row, iso

# Beam's own check rejects project ids that are not Google project ids (e.g. "local").
TOPIC_PATTERN = re.compile(
    r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}$")
PUBLISH_TIMEOUT_SECONDS = 120.0

# Message attributes readers dedupe and route on (Beam's Pub/Sub writer may republish a
# failed bundle, and its id_label does not work on every runner).
ALERT_ATTRIBUTES = ("alert_id", "kind", "severity")
INSIGHT_ATTRIBUTES = ("dashboard_id", "window_start")


def pubsub_message(row: Mapping[str, Any], attribute_names: tuple[str, ...]
                   ) -> tuple[bytes, dict[str, str]]:
    """A row as a JSON message body (times as ISO-8601 Z) and its string attributes."""
    def text(value: Any) -> str:
        return iso(value) if isinstance(value, datetime) else str(value)

    body = json.dumps({k: text(v) if isinstance(v, datetime) else v for k, v in row.items()},
                      sort_keys=True)
    return body.encode(), {name: text(row[name]) for name in attribute_names}


class _PublishDoFn(beam.DoFn):
    def __init__(self, topic: str, attribute_names: tuple[str, ...]):
        self._topic = topic
        self._attribute_names = attribute_names
        self._published = Metrics.counter("realtime_ai", "pubsub_published")
        # A job launched against the emulator publishes to it from every worker, including
        # workers that were started without the variable (a Flink cluster's worker pool).
        self._emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")

    def setup(self):
        if self._emulator_host:
            os.environ.setdefault("PUBSUB_EMULATOR_HOST", self._emulator_host)
        from google.cloud import pubsub_v1  # on the worker; honours PUBSUB_EMULATOR_HOST

        self._publisher = pubsub_v1.PublisherClient()
        self._pending = []

    def process(self, row):
        data, attributes = pubsub_message(row, self._attribute_names)
        self._pending.append(self._publisher.publish(self._topic, data, **attributes))

    def finish_bundle(self):
        pending, self._pending = self._pending, []
        for future in pending:  # raises if a publish failed: Beam retries the bundle
            future.result(timeout=PUBLISH_TIMEOUT_SECONDS)
        self._published.inc(len(pending))

    def teardown(self):
        self._publisher.stop()


@beam.typehints.with_input_types(Row)
class PublishMessages(beam.PTransform):
    """PCollection[dict] -> messages on `topic`: the row as JSON, `attribute_names` as
    attributes. Delivery is at least once: readers dedupe on an id attribute."""

    def __init__(self, topic: str, attribute_names: tuple[str, ...]):
        super().__init__()
        self._fn = _PublishDoFn(topic, attribute_names)

    def expand(self, rows):
        return rows | "Publish" >> beam.ParDo(self._fn)
