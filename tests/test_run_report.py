"""The end-of-run report and what a run leaves under --output: model calls counted as made,
whichever half of a counter the runner reports; every dataset readable, rows or not."""
from datetime import datetime, timezone
from types import SimpleNamespace

import duckdb
import pyarrow.parquet as pq
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName

from realtime_ai.core.records import OUTPUT_SCHEMAS
from realtime_ai.io.parquet import write_empty_datasets
from realtime_ai.pipelines import main


def _result(*counters):
    results = [MetricResult(MetricKey(step, MetricName("realtime_ai", name)), committed,
                            attempted) for step, name, committed, attempted in counters]
    return SimpleNamespace(metrics=lambda: SimpleNamespace(
        query=lambda _filter: {"counters": results}))


def test_model_calls_are_counted_whichever_half_the_runner_reports(tmp_path):
    # As Prism reported them for a streaming job stopped by --max_run_seconds: one step's
    # calls as committed only, another's as attempted only; and a retried bundle's calls
    # (attempted above committed) were made, and paid for, too.
    result = _result(("ScoreRisk", "llm_answers", 9, 0), ("ScoreRisk", "llm_requests", 9, 0),
                     ("ExplainAnomaly", "llm_answers", 0, 5),
                     ("ExplainAnomaly", "llm_requests", 0, 5),
                     ("AskInsight", "llm_answers", 3, 4), ("AskInsight", "llm_requests", 3, 4))
    assert main._counters(result) == {"llm_answers": 18, "llm_requests": 18}
    assert "Model calls: 18 events answered by the model" in main.summary(str(tmp_path), result)


def test_a_batch_run_leaves_every_dataset_readable_with_its_schema(tmp_path):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text('{"metric": "db.cpu_pct", "value": 40, "timestamp": '
                       '"2026-01-05T00:00:00Z"}\n')
    assert main.main([f"--metrics={metrics}", f"--output={tmp_path}/out",
                      "--runner=DirectRunner"]) == 0
    for name, schema in OUTPUT_SCHEMAS.items():
        table = pq.read_table(tmp_path / "out" / name)
        assert table.schema.equals(schema), name
        assert table.num_rows == (1 if name == "metrics" else 0), name


def test_empty_streaming_datasets_read_like_window_files(tmp_path):
    (tmp_path / "metrics" / "date=2026-12-01" / "hour=21").mkdir(parents=True)
    pq.write_table(OUTPUT_SCHEMAS["metrics"].empty_table(),
                   tmp_path / "metrics" / "date=2026-12-01" / "hour=21" / "a-b-pane-0.parquet")
    written = write_empty_datasets(str(tmp_path), OUTPUT_SCHEMAS,
                                   datetime(2026, 12, 1, 22, 5, tzinfo=timezone.utc),
                                   partitioned=True)
    assert written == [name for name in OUTPUT_SCHEMAS if name != "metrics"]
    assert (tmp_path / "alerts" / "date=2026-12-01" / "hour=22" / "empty.parquet").is_file()
    assert not list((tmp_path / "metrics").rglob("empty.parquet"))  # it has a file
    for name, schema in OUTPUT_SCHEMAS.items():
        table = pq.read_table(tmp_path / name)
        assert table.num_rows == 0
        assert set(schema.names) <= set(table.schema.names), name
        # the README's DuckDB reading of a streaming run's dataset
        found = duckdb.sql(f"SELECT count(*) FROM '{tmp_path / name}/**/*.parquet'").fetchall()
        assert found == [(0,)], name
    assert write_empty_datasets(str(tmp_path), OUTPUT_SCHEMAS, datetime.now(timezone.utc),
                                partitioned=True) == []  # once
