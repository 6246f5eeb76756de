"""File sources (JSON lines, gzip, Parquet, bad bytes) and the Parquet sink, on the DirectRunner."""
import gzip
import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from realtime_ai.io.files import ReadEventPayloads, check_pattern_matches
from realtime_ai.io.parquet import WriteDataset, clear_dataset
from realtime_ai.records import DEAD_LETTER_SCHEMA
from realtime_ai.transforms.parse import ParseMetrics


def test_reads_mixed_formats_and_keeps_undecodable_lines(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"n": 1}\n\n{"n": 2}\n')
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as fh:
        fh.write('{"n": 3}\n')
    pq.write_table(pa.Table.from_pylist([{"n": 4}]), tmp_path / "c.parquet")
    (tmp_path / "d.jsonl").write_bytes(b'{"n": "\xff"}\n')
    with TestPipeline(runner="DirectRunner") as p:
        payloads = p | ReadEventPayloads(str(tmp_path / "*"))
        assert_that(payloads, equal_to(
            ['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}', '{"n": "\ufffd"}']))


def test_parse_counts_reconcile(tmp_path):
    lines = [json.dumps({"metric": "m", "value": i, "timestamp": i}) for i in range(5)]
    lines += ["{", '{"metric": "m"}', '{"metric": "m", "value": "x", "timestamp": 1}']
    with TestPipeline(runner="DirectRunner") as p:
        parsed = p | beam.Create(lines) | ParseMetrics(1024)
        assert_that(parsed.valid | "Values" >> beam.Map(lambda r: r.value),
                    equal_to([0.0, 1.0, 2.0, 3.0, 4.0]), label="Valid")
        assert_that(parsed.dead_letter | "Payloads" >> beam.Map(lambda d: d.payload),
                    equal_to(lines[5:]), label="Dead")


def test_missing_files_are_reported_by_option_name(tmp_path):
    with pytest.raises(ValueError, match="no files match --metrics="):
        check_pattern_matches(str(tmp_path / "*.jsonl"), "--metrics")


def test_parquet_dataset_round_trip_and_empty_input(tmp_path):
    rows = [{"source": "s", "payload": "p", "error": "e"}]
    with TestPipeline(runner="DirectRunner") as p:
        p | "Rows" >> beam.Create(rows) | "Full" >> WriteDataset(str(tmp_path), "full",
                                                                 DEAD_LETTER_SCHEMA)
        (p | "None" >> beam.Create([]).with_output_types(dict)
         | "Empty" >> WriteDataset(str(tmp_path), "empty", DEAD_LETTER_SCHEMA))
    full = pq.read_table(tmp_path / "full")
    assert full.schema.equals(DEAD_LETTER_SCHEMA) and full.to_pylist() == rows
    empty = pq.read_table(tmp_path / "empty")
    assert empty.num_rows == 0 and empty.schema.equals(DEAD_LETTER_SCHEMA)
    clear_dataset(str(tmp_path), "full")
    assert not list((tmp_path / "full").iterdir())
