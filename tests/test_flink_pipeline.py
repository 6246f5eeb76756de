"""The main command, unchanged, on a real local Flink cluster: the same rows as the DirectRunner."""
import pyarrow.parquet as pq
import pytest

from realtime_ai.core.records import OUTPUT_SCHEMAS
from realtime_ai.pipelines import main
from tests.compare import comparable_rows
from tests.conftest import REPO

SAMPLES = REPO / "samples"


@pytest.mark.integration
@pytest.mark.flink
def test_batch_job_on_flink_writes_the_directrunners_rows(flink, tmp_path):
    # A few bad records too, so the dead-letter output is compared with something in it.
    metrics = (SAMPLES / "metrics.jsonl").read_text().splitlines()
    metrics[100:100] = ["{not json", '{"metric": "cpu", "value": -1}']
    (tmp_path / "metrics.jsonl").write_text("\n".join(metrics) + "\n")
    inputs = [f"--transactions={SAMPLES}/transactions.jsonl",
              f"--metrics={tmp_path}/metrics.jsonl"]
    # only what the issue allows: --runner and --flink_master; the rest are our defaults
    assert main.main([*inputs, f"--output={tmp_path}/flink", "--runner=FlinkRunner",
                      f"--flink_master={flink['FLINK_MASTER']}"]) == 0
    assert main.main([*inputs, f"--output={tmp_path}/direct", "--runner=DirectRunner"]) == 0
    for name in OUTPUT_SCHEMAS:
        on_flink = pq.read_table(tmp_path / "flink" / name)
        assert on_flink.num_rows > 0, name
        assert comparable_rows(on_flink) == comparable_rows(
            pq.read_table(tmp_path / "direct" / name)), name
