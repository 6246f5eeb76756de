"""Which KafkaIO read each runner gets: Beam's own ReadFromKafka, except where our local Flink
job server's Beam 2.62 expansion service expands it (io/sources.py read_kafka). Nothing is
expanded here: the reads are compared as built."""
import pytest
from apache_beam.coders import RowCoder
from apache_beam.io.kafka import ReadFromKafka
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import external_transforms_pb2
from apache_beam.transforms.external import ExternalTransform, JavaJarExpansionService
from apache_beam.typehints.schemas import named_tuple_from_schema

from realtime_ai.io.sources import (
    KAFKA_READ_URN,
    KafkaReadConfig,
    kafka_read_config,
    read_kafka,
)
from realtime_ai.pipelines import main
from realtime_ai.pipelines.flink_defaults import EXPANSION_SERVICE_JAR
from realtime_ai.pipelines.options import RealtimeAiOptions

CONFIG = kafka_read_config("kafka://localhost:9092/transactions", {"group.id": "g"})


def _read_for(argv: list[str]):
    options = PipelineOptions(argv)
    main._fill_in_runner_defaults(options)  # FlinkRunner: our cluster's job server and service
    return read_kafka(CONFIG, options.view_as(RealtimeAiOptions).kafka_expansion_service,
                      main.kafka_expanded_by_beam_262(options))


def _fields(read: ExternalTransform) -> dict:
    payload = external_transforms_pb2.ExternalConfigurationPayload.FromString(read._payload)
    row = RowCoder(payload.schema).decode(payload.payload)
    return named_tuple_from_schema(payload.schema)._make(row)._asdict()


@pytest.mark.parametrize("argv", [
    [], ["--runner=DirectRunner"], ["--runner=PrismRunner"], ["--runner=DataflowRunner"],
    # Flink with another expansion service: it is not the 2.62 one
    ["--runner=FlinkRunner", "--kafka_expansion_service=localhost:8097"],
], ids=["default", "direct", "prism", "dataflow", "flink-own-service"])
def test_every_other_runner_reads_kafka_with_beams_own_read(argv):
    read = _read_for(argv)
    assert type(read) is ReadFromKafka
    fields = _fields(read)
    assert {name: fields[name] for name in KafkaReadConfig._fields} == CONFIG._asdict()


def test_flink_with_our_job_server_gets_the_payload_its_beam_262_service_knows():
    read = _read_for(["--runner=FlinkRunner"])
    assert type(read) is ExternalTransform and read._urn == KAFKA_READ_URN
    # only the fields 2.62 knows: none that ReadFromKafka of 2.77 added
    assert _fields(read) == CONFIG._asdict()
    service = read._expansion_service
    assert isinstance(service, JavaJarExpansionService)
    assert service.path_to_jar == str(EXPANSION_SERVICE_JAR)
    assert "--defaultEnvironmentType=EMBEDDED" in service._extra_args
