"""WriteDataset round trips on the DirectRunner: exact schema, same rows, and an empty input
still leaves a readable dataset; nothing unfinished is ever written inside a dataset folder;
a staged dataset replaces the previous one."""
from datetime import datetime, timedelta, timezone

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from realtime_ai.core.records import DEAD_LETTER_SCHEMA, METRICS_SCHEMA
from realtime_ai.io import parquet
from realtime_ai.io.parquet import (
    WriteDataset,
    check_output_folder,
    dataset_exists,
    dataset_row_count,
    read_dataset,
    window_file_name,
)
from realtime_ai.io.publish import discard_staging, new_staging_folder, publish_datasets

START = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
METRIC_ROWS = [
    {"metric": "cpu", "event_time": START + timedelta(seconds=i), "timestamp": str(i),
     "value": i / 4, "z_score": -1.5 * i, "anomaly_score": 0.5, "is_anomaly": i % 2 == 0,
     "analysis": None if i % 2 else '{"why": "spike"}', "dashboard_id": None if i == 3 else "d",
     "model": "gpt-4o-mini", "llm_latency_ms": float(i), "prompt_version": "790c9a52"}
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


def test_bounded_rows_keep_their_order_and_make_row_groups_of_the_buffer_size(
        tmp_path, monkeypatch):
    # converted a thousand rows at a time; a table (a row group) each time the buffer fills
    rows = [{**METRIC_ROWS[i % 5], "timestamp": str(i)} for i in range(2_500)]
    monkeypatch.setattr(parquet, "ROW_GROUP_BUFFER_BYTES", 1)
    with TestPipeline(runner="DirectRunner") as p:
        _ = (p | beam.Create(rows, reshuffle=False)
             | WriteDataset(str(tmp_path), "metrics", METRICS_SCHEMA))
    (path,) = (tmp_path / "metrics").iterdir()
    metadata = pq.ParquetFile(path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        1_000, 1_000, 500]
    assert pq.read_table(path).to_pylist() == rows


def test_bounded_rows_in_windows_are_refused_at_construction(tmp_path):
    p = TestPipeline(runner="DirectRunner")
    windowed = p | beam.Create(METRIC_ROWS) | beam.WindowInto(beam.window.FixedWindows(60))
    with pytest.raises(ValueError, match="bounded rows must be in the global window"):
        _ = windowed | WriteDataset(str(tmp_path), "metrics", METRICS_SCHEMA)


def _write_table(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), path)


def test_a_staged_dataset_replaces_the_previous_one_whatever_its_layout(tmp_path):
    out = tmp_path / "out"
    old = out / "metrics"
    _write_table(old / "part-00000-of-00002.parquet", METRIC_ROWS[:1])
    _write_table(old / "part-00001-of-00002.parquet", METRIC_ROWS[1:2])
    _write_table(old / window_file_name(START, START + timedelta(seconds=60), 0), METRIC_ROWS)
    untouched = out / "alerts" / "part-00000-of-00001.parquet"
    _write_table(untouched, METRIC_ROWS[:1])
    staging = new_staging_folder(str(out))
    new = f"{staging}/metrics/part-00000-of-00001.parquet"
    _write_table(tmp_path / new, METRIC_ROWS[2:])
    assert read_dataset(str(old)).num_rows == 7  # still the previous run's until published

    publish_datasets(staging, str(out), {"metrics": [new]})
    assert dataset_exists(str(old)) and [str(p.relative_to(old)) for p in old.rglob("*.parquet")
                                         ] == ["part-00000-of-00001.parquet"]
    assert read_dataset(str(old)).to_pylist() == METRIC_ROWS[2:]
    assert untouched.exists() and not FileSystems.exists(staging)
    publish_datasets(staging, str(out), {"metrics": [new]})  # a retried step changes nothing
    assert read_dataset(str(old)).to_pylist() == METRIC_ROWS[2:]
    assert not discard_staging(staging)
    gone = f"{staging}/metrics/part-00001-of-00002.parquet"  # neither staged nor published
    with pytest.raises(FileNotFoundError, match="written by this run, is gone"):
        publish_datasets(staging, str(out), {"metrics": [new, gone]})
    assert read_dataset(str(old)).to_pylist() == METRIC_ROWS[2:]


def test_bounded_writes_leave_nothing_but_the_run_in_its_staging_folder(tmp_path):
    staging = new_staging_folder(str(tmp_path))
    with TestPipeline(runner="DirectRunner") as p:
        written = p | beam.Create(METRIC_ROWS) | WriteDataset(staging, "metrics", METRICS_SCHEMA)
        assert_that(written, equal_to([f"{staging}/metrics/part-00000-of-00001.parquet"]))
    assert staging.startswith(f"{tmp_path}/.in-progress/run-")
    assert not (tmp_path / "metrics").exists()  # nothing where readers look until published


def test_an_output_folder_that_is_a_file_is_reported_by_option_name(tmp_path):
    check_output_folder(str(tmp_path / "new" / "run"), "--output")  # created: fine
    assert not list((tmp_path / "new" / "run").rglob("write-check-*"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="^--output=.*/file is not a folder the outputs can be "
                                         "written to: Not a directory$"):
        check_output_folder(str(tmp_path / "file"), "--output")


def _row(second: float) -> dict:
    return {**METRIC_ROWS[0], "event_time": START + timedelta(seconds=second),
            "timestamp": str(second)}


def _stamped(*seconds: float) -> list:
    return [TimestampedValue(_row(s), (START + timedelta(seconds=s)).timestamp())
            for s in seconds]


def _window_files(folder) -> dict[str, list[float]]:
    """file path relative to the dataset -> the rows' event seconds after START"""
    return {str(path.relative_to(folder)): sorted(
        (row["event_time"] - START).total_seconds() for row in pq.read_table(path).to_pylist())
        for path in sorted(folder.rglob("*.parquet"))}


def _streaming_pipeline():
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(runner="BundleBasedDirectRunner", options=options)


def test_streaming_rows_land_in_their_own_windows_file_whatever_their_arrival_order(tmp_path):
    # Rows of two 60 s windows arrive interleaved and in several bundles before the watermark
    # passes either window: each window's file holds its rows and no others (the fault of
    # WriteToParquet with triggering_frequency), one file per window, one row group.
    events = (TestStream().advance_watermark_to(START.timestamp())
              .add_elements(_stamped(1, 61, 59.5))
              .add_elements(_stamped(65, 0, 119.999))
              .advance_watermark_to(START.timestamp() + 40)
              .add_elements(_stamped(30))
              .advance_watermark_to(START.timestamp() + 75)   # past 60 + grace 10
              .add_elements(_stamped(100))
              .advance_watermark_to(START.timestamp() + 200))
    with _streaming_pipeline() as p:
        _ = (p | events | WriteDataset(str(tmp_path), "metrics", METRICS_SCHEMA,
                                       window_seconds=60, grace_seconds=10,
                                       allowed_lateness_seconds=3600))
    folder = tmp_path / "metrics"
    assert _window_files(folder) == {
        "date=2026-01-05/hour=10/20260105T100000-20260105T100100-pane-0.parquet":
            [0, 1, 30, 59.5],
        "date=2026-01-05/hour=10/20260105T100100-20260105T100200-pane-0.parquet":
            [61, 65, 100, 119.999],
    }
    for path in folder.rglob("*.parquet"):
        assert pq.ParquetFile(path).metadata.num_row_groups == 1
    assert not [path for path in folder.rglob(".*")]  # no staging file left behind
    table = read_dataset(str(folder))
    assert table.num_rows == 8 and {"date", "hour"} <= set(table.column_names)


def test_streaming_files_are_written_outside_the_dataset_folder_then_moved_in(
        tmp_path, monkeypatch):
    # Before: written as .in-progress-NAME.parquet inside the dataset's hour folder, where a
    # kill left a partial file that DuckDB's 'DIR/**/*.parquet' reads.
    created = []
    create = FileSystems.create
    monkeypatch.setattr(FileSystems, "create", lambda path, *args, **kwargs: (
        created.append(path), create(path, *args, **kwargs))[1])
    events = (TestStream().advance_watermark_to(START.timestamp())
              .add_elements(_stamped(1, 61))
              .advance_watermark_to(START.timestamp() + 200))
    with _streaming_pipeline() as p:
        _ = p | events | WriteDataset(str(tmp_path), "metrics", METRICS_SCHEMA)
    assert len(created) == 2 and len(_window_files(tmp_path / "metrics")) == 2
    for path in created:
        assert path.startswith(f"{tmp_path}/.in-progress/metrics/"), path


def test_streaming_late_rows_get_a_later_pane_of_their_own_window(tmp_path):
    events = (TestStream().advance_watermark_to(START.timestamp())
              .add_elements(_stamped(5, 70))
              .advance_watermark_to(START.timestamp() + 100)  # window [0, 60) has fired
              .add_elements(_stamped(6))  # late, but within the allowed lateness
              .advance_watermark_to(START.timestamp() + 300))
    with _streaming_pipeline() as p:
        _ = (p | events | WriteDataset(str(tmp_path), "metrics", METRICS_SCHEMA,
                                       window_seconds=60, grace_seconds=10,
                                       allowed_lateness_seconds=3600))
    files = _window_files(tmp_path / "metrics")
    assert files == {
        "date=2026-01-05/hour=10/20260105T100000-20260105T100100-pane-0.parquet": [5],
        "date=2026-01-05/hour=10/20260105T100000-20260105T100100-pane-1.parquet": [6],
        "date=2026-01-05/hour=10/20260105T100100-20260105T100200-pane-0.parquet": [70],
    }


def _write_window_rows(output, rows: list) -> None:
    """One streaming job that writes `rows` (TimestampedValues) and ends."""
    events = (TestStream().advance_watermark_to(START.timestamp())
              .add_elements(rows)
              .advance_watermark_to(START.timestamp() + 200))
    with _streaming_pipeline() as p:
        _ = (p | events | WriteDataset(str(output), "metrics", METRICS_SCHEMA,
                                       window_seconds=60, key_columns=("metric", "timestamp")))


def test_a_window_written_again_from_its_first_pane_keeps_the_rows_written_before(tmp_path):
    # A job restored from a savepoint took rows its predecessor's watermark had passed unread
    # as the first pane of a window the predecessor had written: the second file replaced the
    # first, and its rows were lost (benchmarks/flink_faults.py, savepoint fault).
    _write_window_rows(tmp_path, _stamped(1, 2))
    _write_window_rows(tmp_path, _stamped(3))
    name = "date=2026-01-05/hour=10/20260105T100000-20260105T100100-pane-0.parquet"
    assert _window_files(tmp_path / "metrics") == {name: [1, 2, 3]}
    # a replay answers an event again: its row is replaced, not duplicated
    _write_window_rows(tmp_path, [TimestampedValue({**_row(2), "value": 99.0},
                                                   (START + timedelta(seconds=2)).timestamp())])
    rows = read_dataset(str(tmp_path / "metrics")).to_pylist()
    assert sorted((row["timestamp"], row["value"]) for row in rows) == [
        ("1", 0.0), ("2", 99.0), ("3", 0.0)]


def test_an_unreadable_file_under_a_windows_name_is_replaced_not_retried_for_ever(tmp_path):
    # Merging with what the name holds must not fail the write for good: a file there that is
    # not Parquet (cut short by a full disk, or put there by hand) made every retry fail.
    path = tmp_path / "metrics" / window_file_name(START, START + timedelta(seconds=60), 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not parquet")
    _write_window_rows(tmp_path, _stamped(1, 2))
    assert _window_files(tmp_path / "metrics") == {str(path.relative_to(tmp_path / "metrics")):
                                                   [1, 2]}


def test_window_file_names_partition_by_the_windows_date_and_hour():
    start = datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc)
    assert window_file_name(start, start + timedelta(minutes=1), 2) == (
        "date=2026-12-31/hour=23/20261231T235900-20270101T000000-pane-2.parquet")


def test_row_counts_come_from_the_files_footers_not_their_data(tmp_path, monkeypatch):
    folder = tmp_path / "metrics"
    for pane, rows in enumerate((METRIC_ROWS, METRIC_ROWS * 3)):
        path = folder / window_file_name(START, START + timedelta(seconds=60), pane)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=METRICS_SCHEMA), path)
    expected = read_dataset(str(folder)).num_rows
    monkeypatch.setattr(pq, "read_table", None)  # a count that read the data would fail
    assert dataset_row_count(str(folder)) == expected == 4 * len(METRIC_ROWS)
    assert dataset_row_count(str(tmp_path / "absent")) == 0
