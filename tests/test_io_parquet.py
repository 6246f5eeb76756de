"""WriteDataset round trips on the DirectRunner: exact schema, same rows, and an empty input
still leaves a readable dataset."""
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream

from realtime_ai.io.parquet import WriteDataset, clear_dataset, read_dataset
from realtime_ai.records import DEAD_LETTER_SCHEMA, METRICS_SCHEMA

START = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
METRIC_ROWS = [
    {"metric": "cpu", "event_time": START + timedelta(seconds=i), "timestamp": str(i),
     "value": i / 4, "z_score": -1.5 * i, "anomaly_score": 0.5, "is_anomaly": i % 2 == 0,
     "analysis": None if i % 2 else '{"why": "spike"}', "dashboard_id": None if i == 3 else "d",
     "model": "gpt-4o-mini", "llm_latency_ms": float(i)}
    for i in range(5)
]


def test_rows_round_trip_with_the_exact_schema(tmp_path):
    with TestPipeline(runner="DirectRunner") as p:
        _ = p | beam.Create(METRIC_ROWS) | WriteDataset(str(tmp_path), "metrics", METRICS_SCHEMA)
    table = read_dataset(str(tmp_path / "metrics"))
    assert table.schema.equals(METRICS_SCHEMA)
    assert sorted(table.to_pylist(), key=lambda row: row["timestamp"]) == METRIC_ROWS
    # only finished Parquet files are left: no temporary folders a reader would trip on
    files = list((tmp_path / "metrics").iterdir())
    assert files and all(f.is_file() and f.name.endswith(".parquet") for f in files)


def test_an_empty_input_still_leaves_a_readable_empty_dataset(tmp_path):
    with TestPipeline(runner="DirectRunner") as p:
        _ = (p | beam.Create([]).with_output_types(dict)
             | WriteDataset(str(tmp_path), "dead_letter", DEAD_LETTER_SCHEMA))
    table = read_dataset(str(tmp_path / "dead_letter"))
    assert table.num_rows == 0
    assert table.schema.equals(DEAD_LETTER_SCHEMA)


def test_clearing_a_dataset_removes_the_files_of_an_earlier_run(tmp_path):
    rows = [{"source": "metrics", "payload": "{", "error": "invalid JSON"}]
    with TestPipeline(runner="DirectRunner") as p:
        _ = p | beam.Create(rows) | WriteDataset(str(tmp_path), "dead_letter", DEAD_LETTER_SCHEMA)
    assert read_dataset(str(tmp_path / "dead_letter")).to_pylist() == rows
    clear_dataset(str(tmp_path), "dead_letter")
    assert not list((tmp_path / "dead_letter").iterdir())
    clear_dataset(str(tmp_path), "never_written")  # nothing to clear is fine


def test_unbounded_input_is_refused_rather_than_never_written(tmp_path):
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner="DirectRunner", options=options)
    rows = p | TestStream().add_elements([{"source": "s", "payload": "p", "error": "e"}])
    with pytest.raises(ValueError, match="writes bounded input only"):
        _ = rows | WriteDataset(str(tmp_path), "dead_letter", DEAD_LETTER_SCHEMA)
