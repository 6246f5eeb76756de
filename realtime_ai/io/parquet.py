"""Parquet datasets: one folder per output, readable with pyarrow.parquet.read_table(folder).

Nothing unfinished is ever inside a dataset folder: files being written, and Beam's own
temporary files, are under `<output>/.in-progress/`, which no reader of a dataset looks in.

Batch (bounded input): `part-SSSSS-of-NNNNN.parquet` files from Beam's
WriteToParquetBatched (its rows made Arrow tables by pyarrow, as in streaming), written into
a staging folder of the run's own and published only once the run has written every dataset
(see realtime_ai/io/publish.py); Beam's temporary folder sits beside them.

Streaming (unbounded input): rows are grouped into event-time windows of `window_seconds`
(closing `grace_seconds` after the watermark passes them: see realtime_ai/windowing.py)
and each window's rows become one file, `date=YYYY-MM-DD/hour=HH/WINDOW_START-WINDOW_END-
pane-N.parquet` (the window's start gives the partition; pyarrow reads `date` and `hour` back
as columns). One group per window makes one file and whole row groups, not a file per bundle.
A file is written under `.in-progress/` and then renamed into the dataset, so no reader sees a
partial file (not even a reader that globs hidden files, as DuckDB's `**/*.parquet` does). A
name written before keeps its rows but for the events the new rows cover (by the dataset's
key, core/records.DATASET_KEYS): a retried write or a replay never duplicates rows, and a
window fired again from its first pane with other rows never loses the first ones.
Rows later than the window's on-time file (within `allowed_lateness_seconds`) come out in
later panes of the same window, each its own file.

We group by window ourselves instead of using WriteToParquet's `triggering_frequency`, which
buffers rows across windows and can stamp them with the wrong window.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, BinaryIO, TypeVar

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from realtime_ai.core.rows import Row, merged_by_key
from realtime_ai.windowing import GraceWindows, window_bounds

ROW_GROUP_BUFFER_BYTES = 64 * 1024 * 1024
ROWS_PER_CONVERSION = 1000
ROW_GROUP_ROWS = 1_000_000
WORK_FOLDER = ".in-progress"  # under the output, beside the datasets; pyarrow skips it
T = TypeVar("T")


def dataset_path(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, name)


def work_path(output_dir: str, *parts: str) -> str:
    """A path under the output's work folder: on the outputs' filesystem, outside every
    dataset folder."""
    return FileSystems.join(output_dir, WORK_FOLDER, *parts)


def make_folder(path: str) -> None:
    """Create a folder (a no-op on object stores) if it is missing."""
    if not FileSystems.exists(path):
        try:
            FileSystems.mkdirs(path)
        except OSError:  # created meanwhile by another worker; a real failure shows next
            pass


def window_file_name(window_start: datetime, window_end: datetime, pane_index: int) -> str:
    """The path, relative to the dataset folder, of one window's file of one pane."""
    start, end = (moment.astimezone(timezone.utc) for moment in (window_start, window_end))
    return (f"date={start:%Y-%m-%d}/hour={start:%H}/"
            f"{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}-pane-{pane_index}.parquet")


class _RowsToTablesDoFn(beam.DoFn):
    """Batch: rows -> Arrow tables of about ROW_GROUP_BUFFER_BYTES (the last of a bundle
    smaller), converted ROWS_PER_CONVERSION rows at a time by pa.Table.from_pylist, as the
    streaming files are. Beam's WriteToParquet converts its rows in Python, cell by cell,
    and binds each row's window: 6.6 us a metric row of 12 columns and 9.5 a transaction
    row, against 0.7 and 1.2 this way."""

    def __init__(self, schema: pa.Schema):
        self._schema = schema

    def start_bundle(self):
        self._rows: list[Row] = []
        self._tables: list[pa.Table] = []
        self._bytes = 0

    def process(self, row: Row) -> Iterator[pa.Table]:
        self._rows.append(row)
        if len(self._rows) >= ROWS_PER_CONVERSION:
            self._convert()
            if self._bytes >= ROW_GROUP_BUFFER_BYTES:
                yield self._table()

    def finish_bundle(self):
        self._convert()
        if self._tables:
            yield GlobalWindows.windowed_value_at_end_of_window(self._table())

    def _convert(self) -> None:
        if self._rows:
            table = pa.Table.from_pylist(self._rows, schema=self._schema)
            self._tables.append(table)
            self._bytes += table.nbytes
            self._rows = []

    def _table(self) -> pa.Table:
        table = pa.concat_tables(self._tables)
        self._tables, self._bytes = [], 0
        return table


class _WriteWindowFileDoFn(beam.DoFn):
    """Writes one window pane's rows as one Parquet file, atomically; yields its path."""

    def __init__(self, folder: str, work_folder: str, schema: pa.Schema, grace_seconds: float,
                 key_columns: tuple[str, ...] | None):
        self._folder = folder
        self._work_folder = work_folder
        self._schema = schema
        self._grace_seconds = grace_seconds
        self._key_columns = key_columns
        self._files = Metrics.counter("realtime_ai", "parquet_files_written")
        self._merged = Metrics.counter("realtime_ai", "parquet_window_files_merged")

    def process(self, element, window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, rows = element
        rows = list(rows)
        if not rows:  # a late pane can fire with nothing new
            return
        relative = window_file_name(*window_bounds(window, self._grace_seconds), pane.index)
        final = FileSystems.join(self._folder, relative)
        # A name of this attempt's own: two attempts at one bundle never write one file.
        staging = FileSystems.join(self._work_folder, f"{uuid.uuid4().hex}.parquet.part")
        table = pa.Table.from_pylist(rows, schema=self._schema)
        if FileSystems.exists(final):
            # Written before: by a retry of this bundle (the same events), or by a window fired
            # again from its first pane with other rows (a job restored from a savepoint took
            # rows its predecessor's watermark had passed unread). Replacing the file lost
            # the first rows; the events the new rows do not cover keep theirs.
            try:
                with FileSystems.open(final, compression_type=CompressionTypes.UNCOMPRESSED
                                      ) as old:
                    kept = pq.read_table(old).to_pylist()
            except (OSError, pa.ArrowException) as error:
                # not Parquet (cut short, or put there by hand): failing would fail every retry
                logging.warning("replacing %s, which cannot be read as Parquet: %s", final,
                                str(error).splitlines()[0])
                kept = []
            # the new rows as read back from Parquet too (times in UTC), so keys compare alike
            table = pa.Table.from_pylist(
                merged_by_key(kept, table.to_pylist(), self._key_columns), schema=self._schema)
            self._merged.inc()
        with FileSystems.create(staging, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            pq.write_table(table, out, row_group_size=ROW_GROUP_ROWS)
        make_folder(final.rsplit("/", 1)[0])
        # Replaces the file written before under this name in one step.
        FileSystems.rename([staging], [final])
        self._files.inc()
        yield final


@beam.typehints.with_input_types(Row)
@beam.typehints.with_output_types(str)
class WriteDataset(beam.PTransform):
    """PCollection[dict] -> Parquet files under `<output_dir>/<name>/`; returns the paths
    written. Bounded input: `<file_prefix>-*.parquet` files (an empty input still leaves one
    empty file with the schema, so the dataset is always readable; another prefix adds files
    beside an earlier run's), for a staging `output_dir` (see io/publish.py). Unbounded
    input: one file per event-time window of `window_seconds` per pane, by date and hour (see
    module)."""

    def __init__(self, output_dir: str, name: str, schema: pa.Schema, window_seconds: int = 60,
                 grace_seconds: float = 0.0, allowed_lateness_seconds: float = 0.0,
                 file_prefix: str = "part", key_columns: tuple[str, ...] | None = None):
        super().__init__()
        self._key_columns = key_columns  # what identifies a row: see core/records.DATASET_KEYS
        self._folder = dataset_path(output_dir, name)
        self._file_prefix = file_prefix
        self._work_folder = work_path(output_dir, name)
        self._schema = schema
        self._windows = GraceWindows(window_seconds, grace_seconds, allowed_lateness_seconds)
        self._grace_seconds = grace_seconds

    def expand(self, rows):
        if rows.is_bounded:
            if not isinstance(rows.windowing.windowfn, GlobalWindows):
                raise ValueError("WriteDataset: bounded rows must be in the global window")
            return (rows
                    | "ToTables" >> beam.ParDo(_RowsToTablesDoFn(self._schema))
                    | "WriteParquet" >> beam.io.WriteToParquetBatched(
                        FileSystems.join(self._folder, self._file_prefix), self._schema,
                        file_name_suffix=".parquet"))
        return (
            rows
            | "FileWindows" >> self._windows
            # Rows typed Any in the group, as before rows were typed: the coder of the rows a
            # window holds in state (and in savepoints of earlier versions) stays the same.
            | "OneGroupPerWindow" >> beam.Map(lambda row: (None, row)).with_output_types(
                tuple[None, Any])
            | "GroupWindowRows" >> beam.GroupByKey()
            | "WriteWindowFiles" >> beam.ParDo(
                _WriteWindowFileDoFn(self._folder, self._work_folder, self._schema,
                                     self._grace_seconds, self._key_columns))
        )


EMPTY_FILE = "empty.parquet"


def write_empty_datasets(output_dir: str, schemas: dict[str, pa.Schema], moment: datetime,
                         partitioned: bool) -> list[str]:
    """A zero-row file with the dataset's schema in every dataset that has no file, so that
    readers (pyarrow, DuckDB's globs) find each dataset, rows or not; the names written.
    `partitioned` (a streaming run's datasets): in the date=/hour= folder of `moment`, as
    the run's window files are, so a `**` glob and Hive partitioning read it like them."""
    written = []
    for name, schema in schemas.items():
        folder = dataset_path(output_dir, name)
        if dataset_exists(folder):
            continue
        relative = (f"{moment.astimezone(timezone.utc):date=%Y-%m-%d/hour=%H}/{EMPTY_FILE}"
                    if partitioned else EMPTY_FILE)
        final = FileSystems.join(folder, relative)
        staging = work_path(output_dir, name, f"{uuid.uuid4().hex}.parquet.part")
        with FileSystems.create(staging, compression_type=CompressionTypes.UNCOMPRESSED) as out:
            pq.write_table(schema.empty_table(), out)
        make_folder(final.rsplit("/", 1)[0])
        FileSystems.rename([staging], [final])
        written.append(name)
    return written


def dataset_exists(path: str) -> bool:
    """Whether the dataset folder holds any file yet (a streaming job may not have closed a
    window before it stopped)."""
    return bool(dataset_files(path))


def dataset_files(path: str) -> list[str]:
    """Every file under a dataset folder, in its date= and hour= folders too."""
    # "**" crosses folders: a streaming run files its windows under date=/hour= folders
    return [m.path for m in FileSystems.match([FileSystems.join(path, "**")])[0].metadata_list]


def _read_each_file(path: str, read: Callable[[str, BinaryIO], T]) -> Iterator[T]:
    """`read(path, handle)` of each Parquet file of a dataset, opened through Beam's
    filesystems."""
    for file in dataset_files(path):
        if file.endswith(".parquet"):
            with FileSystems.open(file, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                yield read(file, f)


def dataset_row_count(path: str) -> int:
    """Rows in a dataset, from its files' Parquet footers: nothing else is read, so counting a
    month's backfill on gs:// costs one small read per file."""
    return sum(_read_each_file(path, lambda _, f: pq.ParquetFile(f).metadata.num_rows))


def _columns_of(file: str, handle: BinaryIO, columns: tuple[str, ...],
                required: tuple[str, ...]) -> pa.Table:
    """The `columns` a file has, as a table; ValueError naming the file when it is not a
    Parquet file or lacks one of `required`."""
    try:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"{file} is not a readable Parquet file: {error}") from None
    missing = [name for name in required if name not in names]
    if missing:
        raise ValueError(f"{file} has no column {', '.join(missing)}")
    return parquet.read(columns=[name for name in columns if name in names])


def dataset_rows(path: str, columns: tuple[str, ...],
                 required: tuple[str, ...] = ()) -> Iterator[dict]:
    """The rows of a dataset (local or remote), one file in memory at a time, each with
    `columns`: one that a file lacks (written before the column existed) is None, unless it
    is `required` (ValueError naming the file, as for a file that is not Parquet)."""
    for table in _read_each_file(path, lambda file, f: _columns_of(file, f, columns, required)):
        for row in table.to_pylist():
            yield {name: row.get(name) for name in columns}


def check_dataset(path: str, required: tuple[str, ...]) -> None:
    """ValueError unless `path` is a dataset of Parquet files that have the `required`
    columns; only the files' footers are read."""
    if not any(file.endswith(".parquet") for file in dataset_files(path)):
        raise ValueError(f"{path} holds no Parquet file")
    for _ in _read_each_file(path, lambda file, f: _columns_of(file, f, (), required)):
        pass


def read_dataset(path: str) -> pa.Table:
    return pq.read_table(path)


def check_output_folder(output_dir: str, option: str) -> None:
    """Raise ValueError naming the option when no file can be written under `output_dir`
    (a file, not a folder; read-only; an unknown filesystem), by writing and removing one."""
    try:
        probe = work_path(output_dir, f"write-check-{uuid.uuid4().hex}")
        with FileSystems.create(probe, compression_type=CompressionTypes.UNCOMPRESSED):
            pass
        FileSystems.delete([probe])
    except (OSError, ValueError) as error:  # ValueError: no filesystem for the path's scheme
        reason = getattr(error, "strerror", None) or str(error)
        raise ValueError(f"{option}={output_dir} is not a folder the outputs can be written "
                         f"to: {reason}") from None
