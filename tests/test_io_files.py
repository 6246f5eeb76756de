"""ReadEventPayloads over real temp files (JSON lines, gzip, Parquet, mixed) and the start-up
check that a pattern matches something."""
import gzip
import re
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from realtime_ai.io.files import ReadEventPayloads, check_pattern_matches


def read_all(pattern: str, expected: list[str]) -> None:
    with TestPipeline(runner="DirectRunner") as p:
        assert_that(p | ReadEventPayloads(pattern), equal_to(expected))


def test_json_lines_keep_everything_but_the_line_ending(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(
        b'{"n": 1}\n\n   \n {"n": 2} \r\n{"n": 3}\t\n\n{"n": 4}')  # last line unterminated
    read_all(str(tmp_path / "a.jsonl"), ['{"n": 1}', ' {"n": 2} ', '{"n": 3}\t', '{"n": 4}'])


def test_every_json_lines_extension_and_gzip_by_extension(tmp_path):
    (tmp_path / "a.json").write_text('{"n": 1}\n')
    (tmp_path / "b.ndjson").write_text('{"n": 2}\n')
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as handle:
        handle.write('{"n": 3}\n\n{"n": 4}\n')
    read_all(str(tmp_path / "*"), ['{"n": 1}', '{"n": 2}', '{"n": 3}', '{"n": 4}'])


def test_bytes_that_are_not_utf8_become_replacement_characters_not_a_crash(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"n": "\xff\xfe"}\n{"n": 2}\n')
    with gzip.open(tmp_path / "bad.jsonl.gz", "wb") as handle:
        handle.write(b'{"m": "caf\xe9"}\n')
    read_all(str(tmp_path / "bad.*"),
             ['{"n": "\ufffd\ufffd"}', '{"n": 2}', '{"m": "caf\ufffd"}'])


def test_parquet_rows_become_canonical_json_across_row_groups(tmp_path):
    table = pa.table({
        "transaction_id": ["t1", "t2", "t3"],
        "amount": [1.5, None, 3.0],
        "timestamp": pa.array([datetime(2026, 1, 5, 10, tzinfo=timezone.utc)] * 3,
                              pa.timestamp("us", tz="UTC")),
    })
    pq.write_table(table, tmp_path / "events.parquet", row_group_size=2)
    stamp = '"timestamp": "2026-01-05T10:00:00Z"'
    read_all(str(tmp_path / "*.parquet"), [
        f'{{"amount": 1.5, {stamp}, "transaction_id": "t1"}}',
        f'{{"amount": null, {stamp}, "transaction_id": "t2"}}',
        f'{{"amount": 3.0, {stamp}, "transaction_id": "t3"}}',
    ])


def test_one_glob_may_mix_formats_across_many_files(tmp_path):
    expected = []
    for i in range(6):
        (tmp_path / f"part-{i}.jsonl").write_text(f'{{"file": {i}}}\n')
        expected.append(f'{{"file": {i}}}')
    with gzip.open(tmp_path / "part-g.jsonl.gz", "wt") as handle:
        handle.write('{"file": "g"}\n')
    pq.write_table(pa.Table.from_pylist([{"file": "p"}]), tmp_path / "part-p.parquet")
    read_all(str(tmp_path / "part-*"), expected + ['{"file": "g"}', '{"file": "p"}'])


def test_a_pattern_that_matches_nothing_is_reported_by_option_name(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    check_pattern_matches(str(tmp_path / "*.jsonl"), "--metrics")  # matches: no error
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(ValueError, match=f"^no files match --metrics={re.escape(pattern)}$"):
        check_pattern_matches(pattern, "--metrics")


def test_a_pattern_no_filesystem_understands_is_reported_by_option_name():
    with pytest.raises(ValueError, match="^cannot list --transactions=nosuchfs://bucket/"):
        check_pattern_matches("nosuchfs://bucket/*.jsonl", "--transactions")
