"""ShadowModel: a second model asked about a sample of the transactions, beside the fast model,
to see how it would do before it replaces it (--shadow_fast_model, --shadow_sample)."""
from __future__ import annotations

import dataclasses

import apache_beam as beam

from realtime_ai.core import model_inputs, shadow
from realtime_ai.core.answers import ScoredTransaction
from realtime_ai.core.rows import Row
from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms.ask_model import AskModel


def _risk_data(scored: ScoredTransaction) -> dict:
    return model_inputs.transaction_risk_data(scored.featured)


@beam.typehints.with_input_types(ScoredTransaction)
class ShadowModel(beam.PTransform):
    """PCollection[ScoredTransaction] (the fast model's scores) -> PCollection[Row] (shadow
    rows, records.SHADOW_SCHEMA).

    The transactions in the sample (`shadow.in_sample` of the id, `sample` of them) are asked
    again, of `shadow_model`, through the fast tier's endpoints and settings (cache, memo,
    packing, rate budget) but its own backend: its own breakers, so a failing shadow never
    takes the fast model's endpoints out. Its failures are not degraded to the local rules
    (that would compare the rules) nor dead-lettered (the transaction is not the shadow's to
    lose): each is a row with the reason. Nothing goes back to the primary path.
    """

    def __init__(self, config: LlmConfig, shadow_model: str, sample: float,
                 risk_threshold: float):
        super().__init__()
        self._config = dataclasses.replace(config, fast_model=shadow_model,
                                           on_model_failure=base.DEAD_LETTER)
        self._shadow_model = shadow_model
        self._sample = sample
        self._threshold = risk_threshold

    def expand(self, scored):
        sample, shadow_model, threshold = self._sample, self._shadow_model, self._threshold
        answered, _no_dead_letters = (
            scored
            | "InShadowSample" >> beam.Filter(
                lambda scored: shadow.in_sample(scored.featured.transaction.transaction_id,
                                                sample))
            | "AskShadowModel" >> AskModel(self._config, base.TRANSACTION_RISK, base.FAST,
                                           _risk_data, None, shadow=True))
        # each answer: ModelAnswer(the primary's ScoredTransaction, the shadow's LlmResult or
        # the LlmPermanentError that ended its request)
        return answered | "ShadowRows" >> beam.Map(
            lambda answer: shadow.shadow_row(answer.input.featured, answer.input.risk,
                                             answer.result, shadow_model, threshold)
        ).with_output_types(Row)
