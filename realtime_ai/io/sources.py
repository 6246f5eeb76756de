"""Event sources chosen by the form of the input option.

- a file glob (local or gs://): JSON lines, gzipped or not, or Parquet; bounded (batch);
- `projects/P/subscriptions/S`: a Pub/Sub subscription; unbounded (streaming);
- `kafka://HOST:PORT[,HOST:PORT...]/TOPIC`: a Kafka topic (Azure Event Hubs speaks the same
  protocol), through Beam's cross-language KafkaIO; unbounded (streaming). Python's Pub/Sub
  reader runs on the DirectRunner and Dataflow only; on Flink, read Kafka.

Whatever the source, payloads come out as text and the parse step gives each record its event
time from the payload's `timestamp` field. On Pub/Sub the watermark follows the messages'
publish time, or the attribute named by `event_time_attribute` (RFC 3339 or milliseconds
since the epoch) when given: on Dataflow that lets the watermark follow event time itself.
"""

import re
import typing

import apache_beam as beam
import numpy as np
from apache_beam.io.kafka import ReadFromKafka
from apache_beam.transforms.external import (
    ExternalTransform,
    JavaJarExpansionService,
    NamedTupleBasedPayloadBuilder,
)

from realtime_ai.io.files import EventPayloads, ReadEventPayloads
from realtime_ai.io.pubsub_read import ReadPubSubPayloads

SUBSCRIPTION_PATTERN = re.compile(
    r"^projects/[a-z][-a-z0-9]{4,28}[a-z0-9]/subscriptions/[A-Za-z][\w.~+%-]{2,254}$")


KAFKA_PATTERN = re.compile(r"^kafka://(?P<servers>[^/\s]+:\d+(,[^/\s]+:\d+)*)/(?P<topic>[\w.-]+)$")
KAFKA_READ_URN = "beam:transform:org.apache.beam:kafka_read_without_metadata:v1"
BYTES_DESERIALIZER = "org.apache.kafka.common.serialization.ByteArrayDeserializer"
KAFKA_PROPERTIES_FROM_INPUT = ("bootstrap.servers",)

# KafkaIO's read configuration as Beam's Java expansion services from 2.62 on understand it.
# Python 2.77's ReadFromKafka adds fields that older services reject; these are the common ones
# (sent as this payload only to Beam 2.62's service, see read_kafka; else ReadFromKafka's).
# Real annotations, not strings (no `from __future__ import annotations` in this module):
# Beam infers the payload's schema from them.
class KafkaReadConfig(typing.NamedTuple):
    consumer_config: typing.Mapping[str, str]
    topics: list[str]
    key_deserializer: str
    value_deserializer: str
    start_read_time: typing.Optional[int]  # noqa: UP045 - Beam's schema inference wants these
    max_num_records: typing.Optional[int]  # noqa: UP045
    max_read_time: typing.Optional[int]  # noqa: UP045
    commit_offset_in_finalize: bool
    timestamp_policy: str
    consumer_polling_timeout: typing.Optional[int]  # noqa: UP045
    redistribute: typing.Optional[bool]  # noqa: UP045
    redistribute_num_keys: typing.Optional[np.int32]  # noqa: UP045
    allow_duplicates: typing.Optional[bool]  # noqa: UP045


def is_kafka(spec: str) -> bool:
    return spec.startswith("kafka://")


def is_unbounded(spec: str) -> bool:
    """Whether an input option names a stream (which makes the job a streaming one)."""
    return is_subscription(spec) or is_kafka(spec)


def kafka_consumer_properties(items: list[str] | None) -> dict[str, str]:
    """`--kafka_config KEY=VALUE` items as Kafka consumer properties (SASL/SSL settings,
    group.id, ...); ValueError naming the item that is not KEY=VALUE."""
    properties = {}
    for item in items or []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip() or key != key.strip() or " " in key:
            raise ValueError(f"--kafka_config={item} is not KEY=VALUE (a Kafka consumer "
                             "property, e.g. --kafka_config=security.protocol=SASL_SSL)")
        if key in KAFKA_PROPERTIES_FROM_INPUT:
            raise ValueError(f"--kafka_config={key}=...: {key} comes from the input, "
                             "kafka://HOST:PORT[,HOST:PORT...]/TOPIC")
        properties[key] = value
    return properties


def kafka_read_config(spec: str, properties: typing.Mapping[str, str]) -> KafkaReadConfig:
    """KafkaIO's read configuration of a kafka:// input: from the earliest offset unless
    `properties` say otherwise, timestamped with the records' create time."""
    match = KAFKA_PATTERN.match(spec)
    return KafkaReadConfig(
        consumer_config={"auto.offset.reset": "earliest", **properties,
                         "bootstrap.servers": match["servers"]},
        topics=[match["topic"]], key_deserializer=BYTES_DESERIALIZER,
        value_deserializer=BYTES_DESERIALIZER, start_read_time=None, max_num_records=None,
        max_read_time=None, commit_offset_in_finalize=False, timestamp_policy="CreateTime",
        consumer_polling_timeout=2, redistribute=False, redistribute_num_keys=np.int32(0),
        allow_duplicates=False)


def read_kafka(config: KafkaReadConfig, expansion_service_address: str | None,
               beam_262_expansion: bool) -> beam.PTransform:
    """PBegin -> (key, value) bytes of each record: KafkaIO's read of `config`, Beam's own
    ReadFromKafka. Workaround: where the expansion service is Beam 2.62's (`beam_262_expansion`:
    the one our local Flink job server comes with, pipelines/main.py decides), the read is
    sent as a payload of only the fields that service knows: it rejects those 2.77 added."""
    service = expansion_service(expansion_service_address)
    if beam_262_expansion:
        return ExternalTransform(KAFKA_READ_URN, NamedTupleBasedPayloadBuilder(config), service)
    return ReadFromKafka(**config._asdict(), expansion_service=service)


def check_kafka(spec: str, option: str) -> None:
    if not KAFKA_PATTERN.match(spec):
        raise ValueError(f"{option}={spec} is not a Kafka topic: expected "
                         "kafka://HOST:PORT[,HOST:PORT...]/TOPIC")


def expansion_service(address: str | None):
    """Where KafkaIO is expanded: a running service's HOST:PORT; a launcher .jar, started on
    demand with its Java transforms EMBEDDED in the runner (the local Flink cluster of
    scripts/flink-cluster.sh); or None, for Beam's own, fetched from Maven Central."""
    if address and address.endswith(".jar"):
        # use_deprecated_read: KafkaIO as an unbounded source, which the Flink runner reads
        # natively with its watermark; as a splittable DoFn on portable Flink streaming,
        # records are read but the watermark never moves, so no window ever closes.
        return JavaJarExpansionService(address, extra_args=[
            "{{PORT}}", "--defaultEnvironmentType=EMBEDDED", "--experiments=use_deprecated_read"])
    return address


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


@beam.typehints.with_output_types(str)
class ReadKafkaPayloads(beam.PTransform):
    """PBegin -> PCollection[str]: the values of a Kafka topic's records from the earliest
    offset, timestamped with their create time (which the watermark follows); `properties`
    go to the consumer (e.g. SASL_SSL for Azure Event Hubs); `beam_262_expansion`: see
    read_kafka."""

    def __init__(self, spec: str, expansion_service_address: str | None,
                 properties: typing.Mapping[str, str], beam_262_expansion: bool = False):
        super().__init__()
        self._config = kafka_read_config(spec, properties)
        self._expansion_service = expansion_service_address
        self._beam_262_expansion = beam_262_expansion

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadKafka" >> read_kafka(self._config, self._expansion_service,
                                        self._beam_262_expansion)
            | "RecordValues" >> beam.Map(lambda record: _decoded(record[1])).with_output_types(
                str)
        )


class ReadEvents(beam.PTransform):
    """PBegin -> EventPayloads: the payloads of the files, subscription or Kafka topic `spec`
    names, and (files only) a DeadLetter of `source` per unreadable file. A subscription is
    read with Beam's own reader where `native_pubsub` (the runner has one: Dataflow, the
    legacy DirectRunner), else with ReadPubSubPayloads, which runs on portable runners
    (Prism). A Kafka topic is read as `kafka_beam_262_expansion` says (see read_kafka)."""

    def __init__(self, spec: str, source: str, event_time_attribute: str | None = None,
                 kafka_expansion_service: str | None = None, native_pubsub: bool = True,
                 kafka_properties: typing.Mapping[str, str] | None = None,
                 kafka_beam_262_expansion: bool = False):
        super().__init__()
        self._kafka_beam_262_expansion = kafka_beam_262_expansion
        self._spec = spec
        self._source = source
        self._event_time_attribute = event_time_attribute
        self._kafka_expansion_service = kafka_expansion_service
        self._native_pubsub = native_pubsub
        self._kafka_properties = dict(kafka_properties or {})

    def expand(self, pbegin):
        if not is_unbounded(self._spec):
            return pbegin | "ReadFiles" >> ReadEventPayloads(self._spec, self._source)
        return EventPayloads(self._stream(pbegin), None)

    def _stream(self, pbegin):
        if is_kafka(self._spec):
            return pbegin | "ReadKafka" >> ReadKafkaPayloads(
                self._spec, self._kafka_expansion_service, self._kafka_properties,
                self._kafka_beam_262_expansion)
        if not self._native_pubsub:
            return pbegin | "PullPubSub" >> ReadPubSubPayloads(self._spec,
                                                              self._event_time_attribute)
        return (
            pbegin
            | "ReadPubSub" >> beam.io.ReadFromPubSub(
                subscription=self._spec, timestamp_attribute=self._event_time_attribute)
            | "DecodePayloads" >> beam.Map(_decoded).with_output_types(str)
        )
