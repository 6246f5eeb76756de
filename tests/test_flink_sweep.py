"""benchmarks/flink_sweep.py: one rate's figures from a flink_latency run."""
import pytest

from tests.conftest import REPO, benchmark_script


@pytest.fixture
def sweep(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # where it finds flink_latency
    return benchmark_script("flink_sweep")


def _result(**changes) -> dict:
    start = 1000.0
    result = {
        "rate": 300.0, "seconds": 60.0, "work": "/tmp/w",
        "events": {"transactions": 5700, "metrics": 12300},
        "publish_start_epoch": start, "publish_end_epoch": start + 60.0,
        "job_exit_code": 0, "drained_after_publish_end_s": 12.1,
        "cores_used_while_publishing": {"machine": 1.2}, "cpu_probe_s": 0.06,
        # the lowest input watermark of each vertex: one falls behind, one has none yet
        "timeline": [
            {"t": start + 29.0, "vertices": {"a": {"input_watermark_lag_s": 2.5},
                                             "b": {"input_watermark_lag_s": None}}},
            {"t": start + 61.0, "vertices": {"a": {"input_watermark_lag_s": 9.0},
                                             "b": {"input_watermark_lag_s": 4.0}}}],
        "compare": {"late_dead_letters": 0, "datasets": {
            "transactions": {"equal": True, "stream_rows": 5700, "batch_rows": 5700},
            "metrics": {"equal": False, "stream_rows": 12000, "batch_rows": 12300}}},
        "alerts": {"published_ids": 40, "batch_ids": 40, "ids_equal_batch": True,
                   "missing_id_sample": [],
                   "latency_ms_all": {"count": 40, "p50": 2100.0, "p95": 3900.0,
                                      "p99": 4400.0, "max": 4600.0}},
    }
    return {**result, **changes}


def test_a_rates_figures_say_how_far_it_fell_behind_and_what_differs_from_batch(sweep):
    row = sweep.figures(_result())
    assert row["published"] == 18000 and row["achieved_rate"] == 300.0
    assert row["watermark_lag_s"] == {"half_way": 2.5, "publish_end": 9.0}
    assert row["datasets_equal_batch"] == {"transactions": True, "metrics": False}
    assert row["rows"]["metrics"] == [12000, 12300]
    assert set(row["alerts"]) == {"published_ids", "batch_ids", "ids_equal_batch",
                                  "latency_ms_all"}
    assert "me=D" in sweep.line(row) and "2.1/3.9/4.4/4.6" in sweep.line(row)


def test_a_rate_whose_batch_run_failed_or_whose_job_never_ran_is_reported_as_such(sweep):
    failed = sweep.figures(_result(batch_error="Traceback ... MemoryError"))
    assert failed["error"].startswith("batch run failed") and "MemoryError" in failed["error"]
    assert "batch run failed" in sweep.line(failed)
    assert sweep.line({"rate": 1000.0, "error": "TimeoutError: no job"}).endswith(
        "ERROR: TimeoutError: no job")


@pytest.mark.parametrize("rates", ["50,abc", "100,0", "-5", "nan"])
def test_rates_that_are_not_positive_numbers_end_with_a_one_line_error(sweep, rates, capsys):
    with pytest.raises(SystemExit) as ended:
        sweep.parser().parse_args(["--rates", rates])
    assert ended.value.code == 2
    assert "--rates" in capsys.readouterr().err
    assert sweep.parser().parse_args(["--rates", "50,300"]).rates == [50.0, 300.0]
