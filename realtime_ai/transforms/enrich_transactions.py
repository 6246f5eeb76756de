"""EnrichTransactions: the fast model scores every transaction, the deep model analyses the
risky ones with their history and retrieved playbook entries."""
from __future__ import annotations

import apache_beam as beam

from realtime_ai.core import model_inputs, replay, rows
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

    def __call__(self, scored) -> dict:
        featured, risk = scored
        data = model_inputs.transaction_risk_data(featured)
        query = retrieval.query_for(data)
        entries = self._playbook.current().relevant(query)
        tx = featured.transaction
        alerts = (self._past_alerts.current().relevant(
            query, tx.customer_id, tx.event_time, tx.transaction_id)
            if self._past_alerts else [])
        return model_inputs.transaction_analysis_data(featured, risk.answer, entries, alerts)


def _scored_replayable(scored) -> replay.Replayable:
    featured, _risk = scored
    return replay.featured_transaction(featured)


class EnrichTransactions(beam.PTransform):
    """PCollection[FeaturedTransaction] -> (rows, alerts, dead_letter, scored): `scored` is
    every transaction with the fast model's answer, (FeaturedTransaction, LlmResult), for
    comparisons (transforms/shadow_model.py).

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
            replay.featured_transaction)
        high, low = scored | "RouteByRisk" >> beam.Partition(
            lambda item, _: 0 if rows.is_high_risk(item[1], threshold) else 1, 2)
        analysed, analysis_failed = high | "AnalyseHighRisk" >> AskModel(
            self._config, base.TRANSACTION_ANALYSIS, base.DEEP,
            self._analysis_data, _scored_replayable, keep_failed=True)
        transaction_rows = (
            (
                analysed | "EscalatedRows" >> beam.Map(
                    lambda item: rows.transaction_row(item[0][0], item[0][1], threshold,
                                                         item[1])),
                low | "ScoredRows" >> beam.Map(
                    lambda item: rows.transaction_row(item[0], item[1], threshold, None)),
            )
            | "AllTransactionRows" >> beam.Flatten()
        )
        alerts = analysed | "TransactionAlerts" >> beam.Map(
            lambda item: rows.transaction_alert(item[0][0], item[0][1], item[1]))
        dead = (score_failed, analysis_failed) | "TransactionLlmFailures" >> beam.Flatten()
        return transaction_rows, alerts, dead, scored
