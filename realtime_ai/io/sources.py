"""Event sources chosen by the form of the input option.

- a file glob (local or gs://): JSON lines, gzipped or not, or Parquet; bounded (batch);
- `projects/P/subscriptions/S`: a Pub/Sub subscription; unbounded (streaming).

Whatever the source, payloads come out as text and the parse step gives each record its event
time from the payload's `timestamp` field. On Pub/Sub the watermark follows the messages'
publish time, or the attribute named by `event_time_attribute` (RFC 3339 or milliseconds
since the epoch) when given: on Dataflow that lets the watermark follow event time itself.
"""
from __future__ import annotations

import re

import apache_beam as beam

from realtime_ai.io.files import ReadEventPayloads

SUBSCRIPTION_PATTERN = re.compile(
    r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/subscriptions/[A-Za-z][\w.~+%-]{2,254}$")


def is_subscription(spec: str) -> bool:
    """Whether an input option names a Pub/Sub subscription (rather than a file glob)."""
    return spec.startswith("projects/")


def check_subscription(spec: str, option: str) -> None:
    """Raise ValueError naming the option when a Pub/Sub path is not a subscription path."""
    if not SUBSCRIPTION_PATTERN.match(spec):
        raise ValueError(f"{option}={spec} is not a Pub/Sub subscription: expected "
                         "projects/PROJECT_ID/subscriptions/NAME")


def _decoded(data: bytes) -> str:
    # Undecodable bytes become replacement characters, so the parser dead-letters the
    # message with its reason instead of the job failing on it.
    return data.decode("utf-8", errors="replace")


class ReadEvents(beam.PTransform):
    """PBegin -> PCollection[str]: the payloads of the files or subscription `spec` names."""

    def __init__(self, spec: str, event_time_attribute: str | None = None):
        super().__init__()
        self._spec = spec
        self._event_time_attribute = event_time_attribute

    def expand(self, pbegin):
        if not is_subscription(self._spec):
            return pbegin | "ReadFiles" >> ReadEventPayloads(self._spec)
        return (
            pbegin
            | "ReadPubSub" >> beam.io.ReadFromPubSub(
                subscription=self._spec, timestamp_attribute=self._event_time_attribute)
            | "DecodePayloads" >> beam.Map(_decoded).with_output_types(str)
        )
