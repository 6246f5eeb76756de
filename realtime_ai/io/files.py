"""Event files: JSON lines (optionally compressed) and Parquet, local or on any Beam filesystem.

A file that cannot be read to its end (a truncated or corrupt compressed stream, a corrupt
Parquet file, a folder) is a dead letter naming the file and how far it got; the lines read
before the damage are kept and every other file is still read.
"""
from __future__ import annotations

import bz2
import logging
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput

from realtime_ai.core.parsing import to_json_payload
from realtime_ai.core.records import DeadLetter

PARQUET_SUFFIX = ".parquet"
PARQUET_BATCH_ROWS = 4096
READ_CHUNK_BYTES = 1 << 20
DEAD_LETTER = "dead_letter"
GLOB_CHARACTERS = frozenset("*?[")

# Beam's own compressed reader stops silently where a truncated stream ends; ours checks that
# every stream reached its end marker. Same formats and extensions as Beam's AUTO.
_DECOMPRESSORS: dict[str, Callable] = {
    CompressionTypes.GZIP: lambda: zlib.decompressobj(zlib.MAX_WBITS | 16),
    CompressionTypes.DEFLATE: zlib.decompressobj,
    CompressionTypes.BZIP2: bz2.BZ2Decompressor,
    CompressionTypes.LZMA: lzma.LZMADecompressor,
    CompressionTypes.ZSTD: lambda: zstandard.ZstdDecompressor(
        max_window_size=2 ** 31).decompressobj(),
}
_CORRUPT_STREAM_ERRORS = (zlib.error, lzma.LZMAError, zstandard.ZstdError, EOFError, OSError)


class UnreadableFile(Exception):
    """A file whose content is damaged: read as far as `lines_read`, then `reason`."""

    def __init__(self, reason: str, lines_read: int):
        super().__init__(reason)
        self.reason = reason
        self.lines_read = lines_read


class EventPayloads(NamedTuple):
    payloads: beam.PCollection  # str: one per JSON line, Parquet row or message
    dead_letter: beam.PCollection | None  # DeadLetter per unreadable file; None for streams


def file_patterns(spec: str) -> list[str]:
    """The globs of an input option: one, or several separated by commas."""
    return [pattern.strip() for pattern in spec.split(",") if pattern.strip()]


def check_pattern_matches(spec: str, option: str) -> None:
    """Raise ValueError naming the option when a glob of `spec` matches no file, or a path
    without wildcards is a folder or cannot be opened."""
    for pattern in file_patterns(spec):
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except (OSError, ValueError) as error:  # Beam raises BeamIOError (an OSError) here
            raise ValueError(f"cannot list {option}={pattern}: {error}") from None
        if not matched:
            raise ValueError(f"no files match {option}={pattern}")
        if not GLOB_CHARACTERS & set(pattern):
            _check_opens(pattern, option)


def _check_opens(path: str, option: str) -> None:
    # A local folder matches itself; only opening it tells it from a file.
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED):
            pass
    except IsADirectoryError:
        raise ValueError(f"{option}={path} is a folder: give a glob of its files, e.g. "
                         f"{option}={FileSystems.join(path, '*')}") from None
    except OSError as error:
        raise ValueError(f"cannot open {option}={path}: {error}") from None


def decompressed_lines(raw, compression: str) -> Iterator[bytes]:
    """The lines (without b'\\n') of the compressed stream(s) read from binary file `raw`;
    UnreadableFile when the data is corrupt or ends before a stream's end marker."""
    new_decompressor = _DECOMPRESSORS[compression]
    decompressor = new_decompressor()
    pending = b""
    lines = 0
    while True:
        chunk = raw.read(READ_CHUNK_BYTES)
        if not chunk:
            break
        while chunk:
            try:
                data = decompressor.decompress(chunk)
            except _CORRUPT_STREAM_ERRORS as error:
                raise UnreadableFile(f"corrupt {compression} data: {error}", lines) from None
            chunk = b""
            if decompressor.eof and decompressor.unused_data:  # concatenated streams
                chunk = decompressor.unused_data
                decompressor = new_decompressor()
            *complete, pending = (pending + data).split(b"\n")
            lines += len(complete)
            yield from complete
    if not decompressor.eof:
        raise UnreadableFile(f"truncated {compression} file: the data ends before the end "
                             "of its compressed stream", lines)
    if pending:
        yield pending


def _lines(readable: fileio.ReadableFile) -> Iterator[bytes]:
    compression = CompressionTypes.detect_compression_type(readable.metadata.path)
    with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        if compression in _DECOMPRESSORS:
            yield from decompressed_lines(handle, compression)
        else:
            # Beam's file handles have readline() but are not iterable
            yield from (line.removesuffix(b"\n") for line in iter(handle.readline, b""))


def _parquet_payloads(readable: fileio.ReadableFile) -> Iterator[str]:
    rows = 0
    with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        try:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    rows += 1
                    yield to_json_payload(row)
        except (pa.ArrowInvalid, OSError) as error:  # pyarrow: OSError for corrupt pages
            raise UnreadableFile(f"corrupt Parquet file: {error}", rows) from None


def file_payloads(readable: fileio.ReadableFile) -> Iterator[str]:
    """One payload per non-blank JSON line or Parquet row of a file; UnreadableFile when it
    is damaged (after the payloads read before the damage)."""
    if readable.metadata.path.lower().endswith(PARQUET_SUFFIX):
        yield from _parquet_payloads(readable)
        return
    # Any other file is JSON lines. Lines that are not UTF-8 are kept (with replacement
    # characters) so the parser dead-letters them instead of the job failing.
    for raw_line in _lines(readable):
        line = raw_line.decode("utf-8", errors="replace").removesuffix("\r")
        if line.strip():
            yield line


class _FilePayloadsDoFn(beam.DoFn):
    def __init__(self, source: str):
        self._source = source

    def process(self, readable: fileio.ReadableFile):
        path = readable.metadata.path
        try:
            yield from file_payloads(readable)
        except UnreadableFile as error:
            reason = f"{error.reason} (read {error.lines_read} records before it)"
        else:
            return
        logging.getLogger(__name__).warning("unreadable input file %s: %s", path, reason)
        yield TaggedOutput(DEAD_LETTER, DeadLetter(self._source, path,
                                                   f"unreadable input file: {reason}"))


class ReadEventPayloads(beam.PTransform):
    """PBegin -> EventPayloads: one payload per JSON line or Parquet row of every file
    matching `file_pattern` (several globs may be separated by commas; formats may be
    mixed), files read in parallel; a DeadLetter of `source` per damaged file."""

    def __init__(self, file_pattern: str, source: str):
        super().__init__()
        self._patterns = file_patterns(file_pattern)
        self._source = source

    def expand(self, pbegin):
        read = (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "MatchFiles" >> fileio.MatchAll()
            | "SpreadFiles" >> beam.Reshuffle()
            | "OpenFiles" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "FilePayloads" >> beam.ParDo(_FilePayloadsDoFn(self._source)).with_output_types(
                str, **{DEAD_LETTER: DeadLetter}).with_outputs(DEAD_LETTER, main="payloads")
        )
        return EventPayloads(read.payloads, read[DEAD_LETTER])
