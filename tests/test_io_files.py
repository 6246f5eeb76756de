"""ReadEventPayloads over real temp files (JSON lines, gzip, Parquet, mixed; damaged ones
dead-lettered) and the start-up check that a pattern matches something readable."""
import bz2
import gzip
import io
import lzma
import re
import zlib
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from realtime_ai.core.records import DeadLetter
from realtime_ai.io.files import (
    ReadEventPayloads,
    UnreadableFile,
    check_pattern_matches,
    decompressed_lines,
)


def read_all(pattern: str, expected: list[str], dead_letters: tuple = ()) -> None:
    """`dead_letters`: (path, error) of every file that should be dead-lettered"""
    with TestPipeline(runner="DirectRunner") as p:
        read = p | ReadEventPayloads(pattern, "metrics")
        assert_that(read.payloads, equal_to(expected))
        assert_that(read.dead_letter, equal_to(
            [DeadLetter("metrics", path, error) for path, error in dead_letters]), label="Dead")


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


def test_a_damaged_file_is_a_dead_letter_naming_it_and_every_other_file_is_read(tmp_path):
    # Before: the truncated gzip gave a third of its lines and no word of the rest; the
    # corrupt one failed the whole job with a traceback.
    (tmp_path / "good.jsonl").write_text('{"n": 1}\n')
    whole = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(300)))
    (tmp_path / "cut.jsonl.gz").write_bytes(whole[:len(whole) // 3])
    (tmp_path / "garbage.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not deflate" * 50)
    (tmp_path / "broken.parquet").write_bytes(b"PAR1" + b"\x00" * 100)
    (tmp_path / "folder.jsonl").mkdir()  # a glob matches files only: not read, not a failure
    kept = decompressed_lines(io.BytesIO(whole[:len(whole) // 3]), CompressionTypes.GZIP)
    kept_lines = []
    with pytest.raises(UnreadableFile):
        kept_lines.extend(line.decode() for line in kept)
    assert 0 < len(kept_lines) < 300
    read_all(str(tmp_path / "*"), ['{"n": 1}', *kept_lines], dead_letters=[
        (str(tmp_path / "cut.jsonl.gz"), "unreadable input file: truncated gzip file: the "
         "data ends before the end of its compressed stream (read "
         f"{len(kept_lines)} records before it)"),
        (str(tmp_path / "garbage.jsonl.gz"), "unreadable input file: corrupt gzip data: "
         "Error -3 while decompressing data: invalid block type (read 0 records before it)"),
        (str(tmp_path / "broken.parquet"), "unreadable input file: corrupt Parquet file: "
         "Parquet magic bytes not found in footer. Either the file is corrupted or this is "
         "not a parquet file. (read 0 records before it)"),
    ])


COMPRESSORS = {
    CompressionTypes.GZIP: gzip.compress,
    CompressionTypes.BZIP2: bz2.compress,
    CompressionTypes.LZMA: lzma.compress,
    CompressionTypes.DEFLATE: zlib.compress,
    CompressionTypes.ZSTD: zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_every_compression_reads_whole_and_concatenated_streams_and_flags_truncation(
        compression):
    compress = COMPRESSORS[compression]
    lines = [b"x" * (i % 97) + b"%d" % i for i in range(20_000)]
    first, second = b"\n".join(lines[:15_000]) + b"\n", b"\n".join(lines[15_000:])
    data = compress(first) if compression == CompressionTypes.DEFLATE else (
        compress(first) + compress(second))
    expected = lines[:15_000] if compression == CompressionTypes.DEFLATE else lines
    assert list(decompressed_lines(io.BytesIO(data), compression)) == expected
    with pytest.raises(UnreadableFile, match=f"^truncated {compression} file") as cut:
        list(decompressed_lines(io.BytesIO(data[:-7]), compression))
    assert cut.value.lines_read < len(expected)


def test_a_folder_given_as_input_is_reported_by_option_name(tmp_path):
    (tmp_path / "day").mkdir()
    (tmp_path / "day" / "a.jsonl").write_text("{}\n")
    folder = str(tmp_path / "day")
    with pytest.raises(ValueError, match=f"^--transactions={re.escape(folder)} is a folder: "
                                         "give a glob of its files"):
        check_pattern_matches(folder, "--transactions")
    check_pattern_matches(str(tmp_path / "day" / "a.jsonl"), "--transactions")  # a file: fine
