"""Rolling statistics and anomaly scores per metric, in event-time order, from Beam state."""
from __future__ import annotations

import apache_beam as beam

from realtime_ai.core.detectors import DetectorSettings, metric_sequence
from realtime_ai.core.keyed import KeyedStep, OrderingSettings
from realtime_ai.core.records import MetricRecord, ScoredMetric
from realtime_ai.transforms.keyed_in_order import InEventTimeOrder


def _metric(record) -> str:
    return record.metric


@beam.typehints.with_input_types(MetricRecord)
class ScoreMetrics(InEventTimeOrder):
    """PCollection[MetricRecord] -> Ordered(outputs=ScoredMetric, dead_letter): per metric, in
    event-time order, once per value (see MetricRecord.event_id), z_score over the last
    `settings.window` values and the detector's anomaly_score (forgotten after the state TTL
    idle)."""

    def __init__(self, settings: DetectorSettings, ordering: OrderingSettings):
        super().__init__("metrics", _metric, KeyedStep(metric_sequence(settings), ordering),
                         ScoredMetric)
