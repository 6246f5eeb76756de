"""EnrichTransactions: the fast model scores every transaction, the deep model analyses the
risky ones with their history and retrieved playbook entries."""
from __future__ import annotations

import apache_beam as beam

from realtime_ai.core import model_inputs, replay, rows
from realtime_ai.core.answers import AnalysedTransaction, ScoredTransaction
from realtime_ai.core.records import FeaturedTransaction
from realtime_ai.llm import base, retrieval
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import AskModel
from realtime_ai.transforms.playbook_context import WorkerPastAlerts, WorkerPlaybook


class _AnalysisData:
    """Deep-analysis input: the transaction, its history, the relevant playbook entries and
    (with `past_alerts`) the relevant alerts of an earlier run."""

    def __init__(self, playbook_path: str | None, refresh_seconds: float,
                 past_alerts: WorkerPastAlerts | None):
        self._playbook = WorkerPlaybook(playbook_path, refresh_seconds)
        self._past_alerts = past_alerts

    def __call__(self, scored: ScoredTransaction) -> dict:
        data = model_inputs.transaction_risk_data(scored.featured)
        query = retrieval.query_for(data)
        entries = self._playbook.current().relevant(query)
        tx = scored.featured.transaction
        alerts = (self._past_alerts.current().relevant(
            query, tx.customer_id, tx.event_time, tx.transaction_id)
            if self._past_alerts else [])
        return model_inputs.transaction_analysis_data(scored.featured, scored.risk.answer,
                                                      entries, alerts)


def _scored_replayable(scored: ScoredTransaction) -> replay.Replayable:
    return replay.featured_transaction(scored.featured)


@beam.typehints.with_input_types(FeaturedTransaction)
class EnrichTransactions(beam.PTransform):
    """PCollection[FeaturedTransaction] -> (rows: PCollection[Row], alerts: PCollection[Row],
    dead_letter: PCollection[DeadLetter], scored: PCollection[ScoredTransaction]): `scored`
    is every transaction with the fast model's answer, for comparisons
    (transforms/shadow_model.py).

    Every transaction is scored by the fast model; those above `risk_threshold` are analysed
    by the deep model with their history and playbook context (and `past_alerts`, similar
    alerts of an earlier run), and raise an alert.
    """

    def __init__(self, config: LlmConfig, risk_threshold: float,
                 playbook_path: str | None = None, playbook_refresh_seconds: float = 300.0,
                 past_alerts: WorkerPastAlerts | None = None):
        super().__init__()
        self._config = config
        self._threshold = risk_threshold
        self._analysis_data = _AnalysisData(playbook_path, playbook_refresh_seconds,
                                            past_alerts)

    def expand(self, featured):
        threshold = self._threshold
        scored, score_failed = featured | "ScoreRisk" >> AskModel(
            self._config, base.TRANSACTION_RISK, base.FAST, model_inputs.transaction_risk_data,
            replay.featured_transaction, answer_type=ScoredTransaction)
        # Escalated ones get the deep model's analysis; the others None. Where requests are
        # gathered in state, asked as the scores come out of ScoreRisk's gathered bundles:
        # gathered again, every alert would wait for one more keyed hop (1-1.3 s of its
        # 7.5-9.8 s p50 on the local Flink cluster at 330 events/s,
        # benchmarks/flink_latency.py --test-server). Where they are handed over (Flink), they
        # are handed over again, a rebalance with no state: in ScoreRisk's bundles, which wait
        # for all of their answers, a deep model of 3 s a call held the scoring back (payment
        # alerts 24 s behind at 600 events/s).
        analysed, analysis_failed = scored | "AnalyseHighRisk" >> AskModel(
            self._config, base.TRANSACTION_ANALYSIS, base.DEEP,
            self._analysis_data, _scored_replayable, keep_failed=True,
            asks=lambda scored: rows.is_high_risk(scored.risk, threshold),
            answer_type=AnalysedTransaction, already_gathered=self._config.gather_in_state)
        transaction_rows = analysed | "TransactionRows" >> beam.Map(
            lambda analysed: rows.transaction_row(
                analysed.scored.featured, analysed.scored.risk, threshold, analysed.analysis)
        ).with_output_types(rows.Row)
        alerts = analysed | "TransactionAlerts" >> beam.FlatMap(
            lambda analysed: [rows.transaction_alert(
                analysed.scored.featured, analysed.scored.risk, analysed.analysis)]
            if rows.is_high_risk(analysed.scored.risk, threshold) else []
        ).with_output_types(rows.Row)
        dead = (score_failed, analysis_failed) | "TransactionLlmFailures" >> beam.Flatten()
        return transaction_rows, alerts, dead, scored
