"""The shadow model (--shadow_fast_model): the sample, its rows and summary, the composite alone
(local model; test server with two models answering differently, and one it does not serve),
and the main command end to end."""
import json
import pathlib
from datetime import datetime, timezone

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from realtime_ai.core import shadow
from realtime_ai.core.answers import ScoredTransaction
from realtime_ai.core.records import (
    SHADOW_SCHEMA,
    FeaturedTransaction,
    Transaction,
    TransactionFeatures,
)
from realtime_ai.llm import base, server, tasks
from realtime_ai.llm.base import LlmConfig, LlmPermanentError, LlmResult
from realtime_ai.pipelines import main
from realtime_ai.transforms.shadow_model import ShadowModel

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SAMPLES = pathlib.Path(__file__).resolve().parents[1] / "samples"
VERSION = tasks.PROMPT_VERSIONS[base.TRANSACTION_RISK]


def _featured(transaction_id: str, country: str = "DE") -> FeaturedTransaction:
    """In Germany: usual (local rules 0.02); in Brazil an hour after Germany: 0.92."""
    tx = Transaction(transaction_id, "c1", 40.0, "EUR", "Cafe Uno", "restaurants", country,
                     "in_store", T0)
    features = TransactionFeatures(
        history_count=12, mean_amount=38.0, std_amount=6.0, amount_zscore=0.33, velocity_1h=0,
        amount_1h=0.0, seconds_since_last=3600.0, new_country=country != "DE",
        new_merchant_category=False, last_country="DE")
    return FeaturedTransaction(tx, features, ())


def _primary(risk: float, model: str = "fast-m", degraded: str | None = None) -> LlmResult:
    return LlmResult({"risk_score": risk, "reason": "r"}, model, latency_ms=7.0,
                     prompt_version=VERSION, degraded=degraded)


def test_the_sample_is_fixed_by_the_event_id_alone():
    ids = [f"tx-{i}" for i in range(20)]
    # the same in every process (Python's own hash() of a str is not: PYTHONHASHSEED)
    assert [i for i in ids if shadow.in_sample(i, 0.5)] == [
        "tx-1", "tx-3", "tx-5", "tx-6", "tx-8", "tx-12", "tx-16", "tx-18"]
    many = [f"t{i:06d}" for i in range(20_000)]
    small = {i for i in many if shadow.in_sample(i, 0.05)}
    assert 0.045 < len(small) / len(many) < 0.055
    assert small < {i for i in many if shadow.in_sample(i, 0.2)}  # a larger share keeps it
    assert all(shadow.in_sample(i, 1.0) for i in many[:100])


def test_a_row_compares_only_what_both_models_answered():
    featured = _featured("tx-1")
    row = shadow.shadow_row(featured, _primary(0.85), _primary(0.6, "shadow-m"), "shadow-m", 0.8)
    assert {k: row[k] for k in ("primary_escalates", "shadow_escalates", "risk_difference",
                                "compared", "escalation_agrees", "failure", "shadow_model",
                                "prompt_version", "customer_id")} == {
        "primary_escalates": True, "shadow_escalates": False, "risk_difference": -0.25,
        "compared": True, "escalation_agrees": False, "failure": None,
        "shadow_model": "shadow-m", "prompt_version": VERSION, "customer_id": "c1"}
    failed = shadow.shadow_row(featured, _primary(0.85), LlmPermanentError(
        "x", reason="HTTP 404 NotFoundError", latency_ms=3.0), "shadow-m", 0.8)
    assert (failed["compared"], failed["shadow_risk"], failed["failure"],
            failed["shadow_latency_ms"]) == (
        False, None, "shadow model failed: HTTP 404 NotFoundError", 3.0)
    degraded = shadow.shadow_row(featured, _primary(0.85, degraded="circuit open"),
                                 _primary(0.85, "shadow-m"), "shadow-m", 0.8)
    assert not degraded["compared"] and "degraded" in degraded["failure"]
    assert set(row) == set(SHADOW_SCHEMA.names)


def test_the_summary_counts_compared_rows_only():
    featured = _featured("tx-1")
    rows = [shadow.shadow_row(featured, _primary(p), _primary(s, "shadow-m"), "shadow-m", 0.8)
            for p, s in ((0.9, 0.95), (0.1, 0.3), (0.85, 0.5), (0.2, 0.2))]
    rows.append(shadow.shadow_row(featured, _primary(0.9), LlmPermanentError("x"),
                                  "shadow-m", 0.8))
    summary = shadow.summarise(rows)
    assert (summary.sampled, summary.compared, summary.escalations_agreed) == (5, 4, 3)
    assert summary.mean_abs_risk_difference == pytest.approx((0.05 + 0.2 + 0.35 + 0) / 4)
    assert "escalation agreement 75.0% (3/4" in summary.line()
    assert "0 compared" in shadow.summarise([rows[-1]]).line()


def _scored():
    # the primary's answers given by hand: the usual payment rated high, the other not
    return [ScoredTransaction(_featured("tx-usual"), _primary(0.85)),
            ScoredTransaction(_featured("tx-travel", "BR"), _primary(0.92))]


def _verdicts(rows, label="Verdicts"):
    return rows | label >> beam.Map(lambda row: (row["transaction_id"], row["shadow_model"],
                                        row["shadow_risk"], row["escalation_agrees"],
                                        row["failure"]))


def test_shadow_model_alone_with_the_local_model():
    with TestPipeline() as p:
        rows = p | beam.Create(_scored()) | ShadowModel(
            LlmConfig(backend="local"), "shadow-m", sample=1.0, risk_threshold=0.8)
        assert_that(_verdicts(rows), equal_to([
            ("tx-usual", base.LOCAL_MODEL_LABEL, 0.02, False, None),
            ("tx-travel", base.LOCAL_MODEL_LABEL, 0.92, True, None)]))


@pytest.fixture()
def two_models():
    handle = server.start_in_thread(port=0, model_risk_offset={"shadow-m": 0.05},
                                    models=frozenset({"fast-m", "shadow-m"}))
    yield handle
    handle.stop()


def test_shadow_model_alone_with_the_test_server(two_models):
    """The shadow answers differently; a model the endpoint does not serve is a row with the
    reason, and no dead letter: the composite has no dead-letter output at all."""
    config = LlmConfig(backend="openai", base_url=two_models.base_url, max_retries=1)
    with TestPipeline() as p:
        scored = p | beam.Create(_scored())
        answered = scored | "Shadow" >> ShadowModel(config, "shadow-m", 1.0, 0.8)
        missing = scored | "Missing" >> ShadowModel(config, "no-such-model", 1.0, 0.8)
        assert_that(_verdicts(answered), equal_to([
            ("tx-usual", "shadow-m", 0.07, False, None),
            ("tx-travel", "shadow-m", 0.97, True, None)]), label="Answered")
        assert_that(_verdicts(missing, "MissingVerdicts"), equal_to([
            (tx, "no-such-model", None, None, "shadow model failed: HTTP 404 NotFoundError")
            for tx in ("tx-usual", "tx-travel")]), label="Missing")
    assert two_models.stats["status_404"] == 2  # a 404 is not retried


@pytest.mark.integration
def test_the_command_writes_and_summarises_the_shadow_and_nothing_else_changes(
        two_models, tmp_path, monkeypatch, capsys):
    lines = [line for line in (SAMPLES / "transactions.jsonl").read_text().splitlines()
             if line.strip()][:300]
    (tmp_path / "tx.jsonl").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    out = tmp_path / "out"
    assert main.main([f"--transactions={tmp_path}/tx.jsonl", f"--output={out}",
                      f"--llm_base_url={two_models.base_url}", "--fast_model=fast-m",
                      "--deep_model=fast-m", "--shadow_fast_model=shadow-m",
                      "--shadow_sample=0.2", "--risk_threshold=0.5",
                      "--on_model_failure=dead_letter"]) == 0
    report = capsys.readouterr().out
    ids = [json.loads(line)["transaction_id"] for line in lines]
    shadow_rows = pq.read_table(out / "shadow").to_pylist()
    assert sorted(r["transaction_id"] for r in shadow_rows) == sorted(
        i for i in ids if shadow.in_sample(i, 0.2))
    assert all(r["compared"] and r["shadow_model"] == "shadow-m" for r in shadow_rows)
    assert any(r["risk_difference"] for r in shadow_rows)
    transactions = pq.read_table(out / "transactions").to_pylist()
    assert len(transactions) == len(lines)
    assert {r["model"] for r in transactions} <= {"fast-m"}  # no shadow answer in them
    assert pq.read_table(out / "dead_letter").num_rows == 0
    assert two_models.stats["model:shadow-m"] == len(shadow_rows)
    summary = shadow.summarise(shadow_rows)
    assert f"Shadow model: {len(shadow_rows)} transactions sampled" in report
    assert f"escalation agreement {summary.agreement:.1%}" in report
    assert "shadow-m (shadow):" in report
    assert f"{len(shadow_rows)} to the shadow model" in report
