"""benchmarks/flink_latency.py keeps each model's figures in their own results file."""
import json

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
