"""ExplainAnomalies: the fast model explains each value the detector flagged."""
from __future__ import annotations

import apache_beam as beam

from realtime_ai.core import model_inputs, replay, rows
from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import AskModel


class ExplainAnomalies(beam.PTransform):
    """PCollection[ScoredMetric] -> (rows, alerts, dead_letter).

    Only values flagged as anomalies go to the fast model; every value gets its row. An
    explanation of severity high or critical raises an alert.
    """

    def __init__(self, config: LlmConfig):
        super().__init__()
        self._config = config

    def expand(self, scored):
        anomalies, normal = scored | "RouteAnomalies" >> beam.Partition(
            lambda item, _: 0 if item.is_anomaly else 1, 2)
        explained, failed = anomalies | "ExplainAnomaly" >> AskModel(
            self._config, base.METRIC_ANOMALY, base.FAST, model_inputs.metric_anomaly_data,
            replay.scored_metric, keep_failed=True)
        metric_rows = (
            (
                explained | "AnomalyRows" >> beam.Map(lambda item: rows.metric_row(*item)),
                normal | "NormalRows" >> beam.Map(lambda item: rows.metric_row(item, None)),
            )
            | "AllMetricRows" >> beam.Flatten()
        )
        alerts = (
            explained
            | "AnsweredOnly" >> beam.Filter(lambda item: item[1] is not None)
            | "MetricAlerts" >> beam.FlatMap(
                lambda item: [alert] if (alert := rows.metric_alert(*item)) else [])
        )
        return metric_rows, alerts, failed
