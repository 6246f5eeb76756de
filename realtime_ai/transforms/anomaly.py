"""Rolling statistics and anomaly scores per metric, in event-time order, from Beam state."""
from __future__ import annotations

import functools

import apache_beam as beam

from realtime_ai.records import MetricRecord, ScoredMetric
from realtime_ai.transforms.detectors import DetectorSettings, MetricScorer
from realtime_ai.transforms.ordering import KeyedSequence, OrderedByKey
from realtime_ai.transforms.outputs import late_dead_letter


def _score(scorer: MetricScorer, record: MetricRecord) -> ScoredMetric:
    return ScoredMetric(record, scorer.update(record.value, record.event_time.timestamp()))


def _metric_order(record: MetricRecord) -> tuple:
    return (record.event_time, record.value, record.timestamp, record.metadata)


def _metric_sequence(settings: DetectorSettings) -> KeyedSequence:
    return KeyedSequence(
        restore=functools.partial(MetricScorer, settings),
        advance=_score,
        save=MetricScorer.state,
        order_key=_metric_order,
    )


class ScoreMetrics(beam.PTransform):
    """PCollection[MetricRecord] -> (PCollection[ScoredMetric], late dead letters): per metric,
    in event-time order, z_score over the last `settings.window` values and the detector's
    anomaly_score (statistics forgotten after `state_ttl_seconds` idle)."""

    def __init__(self, settings: DetectorSettings, streaming: bool,
                 allowed_lateness_seconds: float, state_ttl_seconds: float):
        super().__init__()
        self._settings = settings
        self._ordering = (streaming, allowed_lateness_seconds, state_ttl_seconds)

    def expand(self, records):
        ordered = (
            records
            | "KeyByMetric" >> beam.Map(lambda r: (r.metric, r)).with_output_types(
                tuple[str, MetricRecord])
            | "MetricStatistics" >> OrderedByKey(
                _metric_sequence(self._settings), *self._ordering)
        )
        lateness = self._ordering[1]
        late = ordered.late | "LateMetrics" >> beam.MapTuple(
            lambda record, behind: late_dead_letter("metrics", record, behind, lateness))
        return ordered.outputs, late
