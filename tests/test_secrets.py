"""A planted API key appears nowhere we write or print, even when every request fails."""
import json
import logging
import uuid

import pyarrow.parquet as pq
import pytest

from realtime_ai.llm import server
from realtime_ai.pipelines import main, redrive, template
from tests.test_pipeline_openai import SAMPLES, _head

pytestmark = pytest.mark.integration


def _everything_written(folder) -> str:
    """Every file under `folder` as text; Parquet as its rows (its pages may be compressed)."""
    texts = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            texts.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
        else:
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    return "\n".join(texts)


def test_a_planted_key_never_leaks_when_every_request_is_rejected(tmp_path, monkeypatch,
                                                                  capfd, caplog):
    planted = f"sk-planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", planted)
    caplog.set_level(logging.DEBUG)  # the most any log would say
    (tmp_path / "tx.jsonl").write_text("\n".join(_head(SAMPLES / "transactions.jsonl", 60)))
    (tmp_path / "metrics.jsonl").write_text("\n".join(_head(SAMPLES / "metrics.jsonl", 300)))
    out = tmp_path / "out"
    # a server that rejects every key but its own, echoing the one it was given
    handle = server.start_in_thread(port=0, required_api_key="sk-the-only-right-key")
    model_options = [f"--llm_base_url={handle.base_url}", "--llm_max_retries=1",
                     f"--memo={tmp_path}/memo", "--runner=DirectRunner",
                     "--on_model_failure=dead_letter"]
    try:
        result = main.run([f"--transactions={tmp_path}/tx.jsonl",
                           f"--metrics={tmp_path}/metrics.jsonl", "--anomaly_detector=zscore",
                           f"--output={out}", *model_options])
        print(main.summary(str(out), result))
        counters = str(result.metrics().query())
        assert redrive.main([f"--dead_letter={out}/dead_letter", f"--output={tmp_path}/again",
                             *model_options]) == 0
    finally:
        handle.stop()
    assert handle.stats["status_401"] > 0 and not handle.stats["status_200"]
    dead = pq.read_table(out / "dead_letter").to_pylist()
    assert {row["source"] for row in dead} >= {"llm:transaction_risk", "llm:dashboard_insight"}
    assert all("401" in row["error"] for row in dead if row["source"].startswith("llm:"))
    printed = capfd.readouterr()
    seen = {
        "stdout": printed.out, "stderr": printed.err, "logs": caplog.text,
        "outputs, dead letters, memo": _everything_written(tmp_path),
        "metrics": counters,
        "template": json.dumps(template.template_metadata()),
    }
    for where, text in seen.items():
        assert planted not in text and planted[11:] not in text, where
    assert "Model calls" in seen["stdout"] and seen["logs"]  # there was something to search
