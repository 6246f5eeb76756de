"""benchmarks/flink_latency.py keeps each model's figures in their own results file."""
import json

import pytest

from tests.conftest import benchmark_script


def test_a_test_server_run_is_kept_by_rate_beside_the_local_models_figures(tmp_path):
    flink_latency = benchmark_script("flink_latency")
    local = tmp_path / flink_latency.LOCAL_MODEL_RESULTS
    by_rate = tmp_path / flink_latency.TEST_SERVER_RESULTS
    local.write_text(json.dumps({"rate": 330.0, "label": "local model"}))
    by_rate.write_text(json.dumps({"100": {"rate": 100.0}}))
    flink_latency.save({"rate": 330.0, "label": "test server"}, True, tmp_path)
    assert json.loads(local.read_text()) == {"rate": 330.0, "label": "local model"}
    assert json.loads(by_rate.read_text()) == {"100": {"rate": 100.0},
                                               "330": {"rate": 330.0, "label": "test server"}}
    flink_latency.save({"rate": 100.0, "label": "local model"}, False, tmp_path)
    assert json.loads(local.read_text()) == {"rate": 100.0, "label": "local model"}


def test_a_run_of_the_recorded_shape_is_kept_apart_from_the_steady_runs(tmp_path):
    flink_latency = benchmark_script("flink_latency")
    flink_latency.save({"rate": 330.0, "input_shape": "steady"}, False, tmp_path)
    flink_latency.save({"rate": 330.0, "input_shape": "recorded"}, False, tmp_path)
    flink_latency.save({"rate": 330.0, "input_shape": "recorded"}, True, tmp_path)
    assert json.loads((tmp_path / "flink_latency.json").read_text())["input_shape"] == "steady"
    assert json.loads((tmp_path / "flink_latency_recorded.json").read_text())[
        "input_shape"] == "recorded"
    assert list(json.loads((tmp_path / "flink_latency_test_server_recorded.json").read_text())
                ) == ["330"]


def test_the_busiest_second_counts_every_streams_events(tmp_path):
    flink_latency = benchmark_script("flink_latency")
    (tmp_path / "transactions.jsonl").write_text(
        '{"timestamp": "2026-12-03T10:00:00.100Z"}\n{"timestamp": "2026-12-03T10:00:01.000Z"}\n'
        "not json\n")
    (tmp_path / "metrics.jsonl").write_text('{"timestamp": "2026-12-03T10:00:00.900Z"}\n')
    assert flink_latency.busiest_second_events(tmp_path) == 2


def test_the_cpu_probe_times_a_fixed_piece_of_work():
    flink_latency = benchmark_script("flink_latency")
    assert 0 < flink_latency.cpu_probe_seconds(repeat=1) < 10


def test_a_cluster_without_a_taskmanager_is_named_as_the_problem(monkeypatch):
    """A TaskManager shut itself down after a cancelled job's tasks hung (Flink's 180 s
    cancellation watchdog); the runs after it each waited out their start-up and failed as
    'CANCELLING' or 'FAILED', with nothing saying why."""
    flink_latency = benchmark_script("flink_latency")
    overview = {"taskmanagers": 0, "slots-total": 0}
    monkeypatch.setattr(flink_latency, "rest", lambda flink, path: overview)
    assert "no TaskManager" in flink_latency.cluster_problem("localhost:8081")
    overview["taskmanagers"] = 1
    assert flink_latency.cluster_problem("localhost:8081") is None


@pytest.mark.parametrize("argv", [["--deep-latency-ms", "3000"],
                                  ["--test-server", "--save", "--deep-latency-ms", "3000"],
                                  ["--test-server", "--deep-latency-ms", "-1"],
                                  ["--test-server", "--deep-latency-ms", "x"]])
def test_a_deep_latency_without_the_test_server_or_saved_or_not_in_ms_ends_in_one_line(
        argv, monkeypatch, capsys):
    """Ended at parse time, before any service is checked: only the test server has a deep
    model to slow, and its runs would go into the saved results of the normal one."""
    flink_latency = benchmark_script("flink_latency")
    monkeypatch.setattr(flink_latency.sys, "argv", ["flink_latency.py", *argv])
    monkeypatch.setattr(flink_latency, "check_services", lambda flink: pytest.fail("ran on"))
    with pytest.raises(SystemExit) as ended:
        flink_latency.main()
    assert ended.value.code == 2
    assert "--deep-latency-ms" in capsys.readouterr().err


def test_a_deep_latency_with_the_test_server_reaches_the_run(monkeypatch):
    flink_latency = benchmark_script("flink_latency")
    monkeypatch.setattr(flink_latency.sys, "argv",
                        ["flink_latency.py", "--test-server", "--deep-latency-ms", "3000"])
    monkeypatch.setattr(flink_latency, "check_services", lambda flink: None)
    asked = []

    def run_with_model(args, pipeline_options, deep_latency_ms):
        asked.append(deep_latency_ms)
        raise SystemExit(0)

    monkeypatch.setattr(flink_latency, "run_with_model", run_with_model)
    with pytest.raises(SystemExit):
        flink_latency.main()
    assert asked == [3000.0]
