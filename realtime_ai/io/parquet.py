"""Parquet datasets: one folder per output, readable with pyarrow.parquet.read_table(folder)."""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

ROW_GROUP_BUFFER_BYTES = 64 * 1024 * 1024


def dataset_path(output_dir: str, name: str) -> str:
    return FileSystems.join(output_dir, name)


class WriteDataset(beam.PTransform):
    """PCollection[dict] -> Parquet files `<output_dir>/<name>/part-SSSSS-of-NNNNN.parquet`.

    Bounded input only. An empty input still leaves one empty file with the schema, so the
    dataset is always readable.
    """

    def __init__(self, output_dir: str, name: str, schema: pa.Schema):
        super().__init__()
        self._prefix = FileSystems.join(dataset_path(output_dir, name), "part")
        self._schema = schema

    def expand(self, rows):
        if not rows.is_bounded:
            raise ValueError(f"WriteDataset({self._prefix}) writes bounded input only")
        return rows | "WriteParquet" >> beam.io.WriteToParquet(
            self._prefix, self._schema, file_name_suffix=".parquet",
            row_group_buffer_size=ROW_GROUP_BUFFER_BYTES)


def clear_dataset(output_dir: str, name: str) -> None:
    """Remove a dataset's files from an earlier run, so a re-run replaces, never appends."""
    pattern = FileSystems.join(dataset_path(output_dir, name), "*")
    stale = [m.path for m in FileSystems.match([pattern])[0].metadata_list]
    if stale:
        FileSystems.delete(stale)


def read_dataset(path: str) -> pa.Table:
    return pq.read_table(path)
