"""benchmarks/flink_latency.py keeps each model's figures in their own results file."""
import importlib.util
import json

from tests.conftest import REPO


def _flink_latency():
    spec = importlib.util.spec_from_file_location("flink_latency",
                                                  REPO / "benchmarks" / "flink_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_test_server_run_is_kept_by_rate_beside_the_local_models_figures(tmp_path):
    flink_latency = _flink_latency()
    local = tmp_path / flink_latency.LOCAL_MODEL_RESULTS.name
    by_rate = tmp_path / flink_latency.TEST_SERVER_RESULTS.name
    local.write_text(json.dumps({"rate": 330.0, "label": "local model"}))
    by_rate.write_text(json.dumps({"100": {"rate": 100.0}}))
    flink_latency.save({"rate": 330.0, "label": "test server"}, True, tmp_path)
    assert json.loads(local.read_text()) == {"rate": 330.0, "label": "local model"}
    assert json.loads(by_rate.read_text()) == {"100": {"rate": 100.0},
                                               "330": {"rate": 330.0, "label": "test server"}}
    flink_latency.save({"rate": 100.0, "label": "local model"}, False, tmp_path)
    assert json.loads(local.read_text()) == {"rate": 100.0, "label": "local model"}
