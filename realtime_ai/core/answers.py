"""What the models answered, as named results (in the style of Beam's `PredictionResult`):
what the model steps emit and the composites pass on to their rows and alerts. Pure: no Beam.

Each is built from (element asked about, answer): `AskModel(..., answered=T)` emits
`T(element, answer)`. The answer is None only where the step keeps elements whose request
failed permanently (`keep_failed`: the row is still written, the failure is dead-lettered).
"""
from __future__ import annotations

from typing import Any, NamedTuple

from realtime_ai.core.records import FeaturedTransaction, ScoredMetric
from realtime_ai.llm.base import LlmResult


class ModelAnswer(NamedTuple):
    """Any element and the model's answer about it."""

    input: Any
    result: LlmResult | None


class ScoredTransaction(NamedTuple):
    """A transaction and the fast model's risk answer."""

    featured: FeaturedTransaction
    risk: LlmResult


class AnalysedTransaction(NamedTuple):
    """A transaction escalated for its risk and the deep model's analysis (None: failed)."""

    scored: ScoredTransaction
    analysis: LlmResult | None


class ExplainedMetric(NamedTuple):
    """An anomalous metric value and the fast model's explanation (None: failed)."""

    scored: ScoredMetric
    explanation: LlmResult | None
