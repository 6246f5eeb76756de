"""ExplainAnomalies: the fast model explains each value the detector flagged, with the
relevant runbooks of the playbook as context."""
from __future__ import annotations

import apache_beam as beam

from realtime_ai.core import model_inputs, replay, rows
from realtime_ai.core.answers import ExplainedMetric
from realtime_ai.core.records import ScoredMetric
from realtime_ai.llm import base, retrieval
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import AskModel
from realtime_ai.transforms.playbook_context import WorkerPlaybook


class _AnomalyData:
    """Explanation input: the value, its statistics and the relevant runbooks."""

    def __init__(self, playbook_path: str | None, refresh_seconds: float):
        self._playbook = WorkerPlaybook(playbook_path, refresh_seconds)

    def __call__(self, scored: ScoredMetric) -> dict:
        query = retrieval.query_for_metric(scored.record.metric, dict(scored.record.metadata))
        runbooks = self._playbook.current().relevant(query, retrieval.RUNBOOK)
        return model_inputs.metric_anomaly_data(scored, runbooks)


@beam.typehints.with_input_types(ScoredMetric)
class ExplainAnomalies(beam.PTransform):
    """PCollection[ScoredMetric] -> (rows: PCollection[Row], alerts: PCollection[Row],
    dead_letter: PCollection[DeadLetter]).

    Only values flagged as anomalies go to the fast model; every value gets its row. An
    explanation of severity high or critical raises an alert.
    """

    def __init__(self, config: LlmConfig, playbook_path: str | None = None,
                 playbook_refresh_seconds: float = 300.0):
        super().__init__()
        self._config = config
        self._anomaly_data = _AnomalyData(playbook_path, playbook_refresh_seconds)

    def expand(self, scored):
        # anomalies get the model's explanation; the others None
        explained, failed = scored | "ExplainAnomaly" >> AskModel(
            self._config, base.METRIC_ANOMALY, base.FAST, self._anomaly_data,
            replay.scored_metric, keep_failed=True, asks=lambda scored: scored.is_anomaly,
            answer_type=ExplainedMetric)
        metric_rows = explained | "MetricRows" >> beam.Map(
            lambda explained: rows.metric_row(explained.scored, explained.explanation)
        ).with_output_types(rows.Row)
        alerts = (
            explained
            | "AnsweredOnly" >> beam.Filter(lambda explained: explained.explanation is not None)
            | "MetricAlerts" >> beam.FlatMap(
                lambda explained: [alert] if (alert := rows.metric_alert(
                    explained.scored, explained.explanation)) else []
            ).with_output_types(rows.Row)
        )
        return metric_rows, alerts, failed
