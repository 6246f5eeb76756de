"""Event files: JSON lines (optionally gzipped) and Parquet, local or on any Beam filesystem."""
from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from realtime_ai.core.parsing import to_json_payload

PARQUET_SUFFIX = ".parquet"
PARQUET_BATCH_ROWS = 4096


def file_patterns(spec: str) -> list[str]:
    """The globs of an input option: one, or several separated by commas."""
    return [pattern.strip() for pattern in spec.split(",") if pattern.strip()]


def check_pattern_matches(spec: str, option: str) -> None:
    """Raise ValueError naming the option when a glob of `spec` matches no file."""
    for pattern in file_patterns(spec):
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except (OSError, ValueError) as error:  # Beam raises BeamIOError (an OSError) here
            raise ValueError(f"cannot list {option}={pattern}: {error}") from None
        if not matched:
            raise ValueError(f"no files match {option}={pattern}")


def _payloads(readable: fileio.ReadableFile):
    if readable.metadata.path.lower().endswith(PARQUET_SUFFIX):
        with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    yield to_json_payload(row)
        return
    # Any other file is JSON lines; AUTO picks gzip/bzip2/... by extension. Lines that are
    # not UTF-8 are kept (with replacement characters) so the parser dead-letters them
    # instead of the job failing.
    with readable.open(compression_type=CompressionTypes.AUTO) as handle:
        # Beam's compressed files have readline() but are not iterable
        for raw_line in iter(handle.readline, b""):
            line = raw_line.decode("utf-8", errors="replace").removesuffix("\n")
            line = line.removesuffix("\r")
            if line.strip():
                yield line


class ReadEventPayloads(beam.PTransform):
    """PBegin -> PCollection[str]: one payload per JSON line or Parquet row of every file
    matching `file_pattern` (several globs may be separated by commas; formats may be
    mixed); files are read in parallel."""

    def __init__(self, file_pattern: str):
        super().__init__()
        self._patterns = file_patterns(file_pattern)

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "MatchFiles" >> fileio.MatchAll()
            | "SpreadFiles" >> beam.Reshuffle()
            | "OpenFiles" >> fileio.ReadMatches(compression=CompressionTypes.UNCOMPRESSED)
            | "FilePayloads" >> beam.FlatMap(_payloads)
        )
