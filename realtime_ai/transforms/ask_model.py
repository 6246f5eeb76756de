"""AskModel: many requests in flight per worker, nothing lost.

`AskModel` sends each element's task data to the model backend without blocking the bundle
on one answer at a time: up to `LlmConfig.concurrency` requests run on the worker's shared
event loop; answers are emitted as they complete and whatever is still in flight is awaited
in `finish_bundle`, so bounded (batch) and unbounded input behave the same. An element whose
request fails permanently is answered by the local rules, labelled as degraded
(`on_model_failure="degrade"`, see local_model.DegradingBackend), or goes to the dead-letter
output with the reason and what a redrive needs to ask again (its original record and context:
core/replay.py). The embedded local model is not called that way: it answers each element at
once, in the bundle.

A shadow model (`shadow=True`: a second opinion, see transforms/shadow_model.py) is asked the
same way, but its calls are counted apart (accounting.SHADOW_MARK in the report's tokens and
cost)
and a failure is passed on as the error, never dead-lettered: the event is not its to lose.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from realtime_ai.core.answers import ModelAnswer
from realtime_ai.core.records import DeadLetter
from realtime_ai.core.replay import Replayable
from realtime_ai.llm import accounting, local_model
from realtime_ai.llm.base import LlmConfig, LlmPermanentError, LlmResult, Spend
from realtime_ai.llm.runner import (
    InFlight,
    freeze_long_lived_objects,
    shared_backend,
    shared_slots,
)
from realtime_ai.transforms import sdk_workarounds
from realtime_ai.transforms.gather import GatherForModel

DEAD_LETTER = "dead_letter"
NAMESPACE = "realtime_ai"

# What the step emits per element: a named result of (element, answer), core/answers.py.
AnswerType = Callable[[Any, LlmResult | None], tuple]


class _Pending(NamedTuple):
    element: Any
    data: dict
    timestamp: Any
    windows: Any


class _ModelDoFn(beam.DoFn):
    """What both ways of asking share: which elements are asked, task data per element,
    accounting of answers."""

    def __init__(self, config: LlmConfig, task: str, tier: str, to_data: Callable[[Any], dict],
                 asks: Callable[[Any], bool] | None, answer_type: AnswerType = ModelAnswer,
                 shadow: bool = False):
        self._config = config
        self._task = task
        self._tier = tier
        self._to_data = to_data
        self._asks = asks
        self._answer_type = answer_type
        self._shadow = shadow

    def _passes_unasked(self, element) -> bool:
        return self._asks is not None and not self._asks(element)

    def setup(self):
        sdk_workarounds.prompt_bundle_ends()
        freeze_long_lived_objects()
        self._prices = accounting.load_prices()
        self._tally: collections.Counter = collections.Counter()
        self._latency = Metrics.distribution(NAMESPACE, "llm_latency_ms")

    def finish_bundle(self):
        # Counters are tallied per answer and reported once per bundle: a Beam counter call
        # per answer cost the bundle thread enough to slow the event loop beside it.
        for name, value in self._tally.items():
            Metrics.counter(NAMESPACE, name).inc(value)
        self._tally.clear()

    def _answered(self, result: LlmResult) -> None:
        """Metrics of one answer, tallied on the bundle's thread, where Beam attributes them
        (the event loop's thread has no metrics context)."""
        tally = self._tally
        if self._shadow:
            tally["llm_shadow_answered"] += 1
            tally["llm_shadow_cache_hits"] += result.cached
            if not result.cached:
                self._spent(result.spent, result.latency_ms)
            return
        tally[f"llm_{self._task}_answered"] += 1
        if result.cached:
            tally["llm_cache_hits"] += 1
            tally["llm_memo_hits"] += result.remembered
            return
        tally["llm_degraded" if result.degraded else "llm_answers"] += 1
        tally["llm_fallbacks"] += result.fell_back
        tally["llm_routed_to_fast"] += result.routed
        if result.endpoint:
            tally[f"llm_answers_by_endpoint:{result.endpoint}"] += 1
        self._spent(result.spent, result.latency_ms)

    def _failed(self, error: LlmPermanentError) -> None:
        self._tally["llm_shadow_failed" if self._shadow
                    else f"llm_{self._task}_dead_lettered"] += 1
        self._spent(error.spent, error.latency_ms)

    def _spent(self, spent: tuple[Spend, ...], event_latency_ms: float) -> None:
        """Every request's tokens, cost and latency, failed ones too; the event's latency
        across its attempts. A shadow's requests count in the totals, its tokens and cost
        under its model's name marked accounting.SHADOW_MARK; its latencies are in the
        shadow/ rows, not in the pipeline's."""
        tally = self._tally
        mark = accounting.SHADOW_MARK if self._shadow else ""
        for spend in spent:
            tally["llm_requests"] += spend.requests
            if spend.failure:
                tally["llm_failed_requests"] += spend.requests
            if self._shadow:
                tally["llm_shadow_requests"] += spend.requests
            elif spend.requests:
                tally[f"llm_request_latency_ms_le:"
                      f"{accounting.latency_bucket(spend.latency_ms)}"] += 1
            tally[f"llm_input_tokens:{spend.model}{mark}"] += spend.input_tokens
            tally[f"llm_output_tokens:{spend.model}{mark}"] += spend.output_tokens
            cost = accounting.cost_micro_usd(self._prices, spend.model, spend.input_tokens,
                                             spend.output_tokens)
            if cost is not None:
                tally[f"llm_cost_micro_usd:{spend.model}{mark}"] += cost
        if self._shadow:
            return
        tally[f"llm_latency_ms_le:{accounting.latency_bucket(event_latency_ms)}"] += 1
        self._latency.update(round(event_latency_ms))


class _AskLocalModelDoFn(_ModelDoFn):
    """The embedded local model answers each element at once, on the bundle's thread: it
    computes in microseconds and never fails, so there is nothing to overlap or retry, and
    the event loop's hand-offs would cost more than the answers."""

    def setup(self):
        super().setup()
        self._model = local_model.LocalBackend()

    def process(self, element):
        if self._passes_unasked(element):
            yield self._answer_type(element, None)
            return
        result = self._model.result(self._task, self._to_data(element))
        self._answered(result)
        yield self._answer_type(element, result)


class _AskModelDoFn(_ModelDoFn):
    """Thin: builds the task data, hands the request to the shared loop, emits answers."""

    def __init__(self, config: LlmConfig, task: str, tier: str, to_data: Callable[[Any], dict],
                 asks: Callable[[Any], bool] | None,
                 to_replayable: Callable[[Any], Replayable] | None, keep_failed: bool,
                 answer_type: AnswerType = ModelAnswer, shadow: bool = False):
        super().__init__(config, task, tier, to_data, asks, answer_type, shadow)
        self._to_replayable = to_replayable
        self._keep_failed = keep_failed

    def setup(self):
        super().setup()
        self._backend = shared_backend(self._config)
        self._in_flight = InFlight(shared_slots(self._config, self._tier))

    # The whole windowed value, not WindowParam: a DoFn that asks for its window has Beam
    # bind its arguments afresh for every element (runners/common.py PerWindowInvoker), on
    # the thread whose GIL the event loop waits for while the model is asked.
    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        if self._passes_unasked(element):
            yield self._answer_type(element, None)
            return
        data = self._to_data(element)
        self._in_flight.add(_Pending(element, data, windowed.timestamp, windowed.windows),
                            self._backend.complete(self._task, data, self._tier))
        yield from self._emit(self._in_flight.drain_completed())

    def finish_bundle(self):
        yield from self._emit(self._in_flight.drain_all())
        super().finish_bundle()

    def _emit(self, completed):
        for pending, outcome in completed:
            if isinstance(outcome, LlmPermanentError) and self._shadow:
                self._failed(outcome)  # passed on as the error: noted in its shadow row
            elif isinstance(outcome, LlmPermanentError):
                self._failed(outcome)
                replayable = self._to_replayable(pending.element)
                dead = DeadLetter(source=f"llm:{self._task}", payload=replayable.payload,
                                  error=str(outcome), context=replayable.context)
                yield TaggedOutput(DEAD_LETTER, WindowedValue(
                    dead, pending.timestamp, pending.windows))
                if not self._keep_failed:
                    continue
                outcome = None
            elif isinstance(outcome, BaseException):
                raise outcome  # a bug, not an LLM failure: fail the bundle so Beam retries it
            else:
                self._answered(outcome)
            yield WindowedValue(self._answer_type(pending.element, outcome), pending.timestamp,
                                pending.windows)


class AskModel(beam.PTransform):
    """PCollection[E] -> (answered: PCollection[answer_type], dead_letter), each answer
    `answer_type(element, LlmResult | None)` (core/answers.py; ModelAnswer unless told).

    Unbounded input is first gathered into bundles of up to concurrency x fast_batch_size
    elements, each waiting at most `batch_wait_ms` (see gather.py), or, where the config says
    not to gather in state (`gather_in_state`: Flink), handed over through a Reshuffle:
    Beam's Flink runner makes it a rebalance, which breaks the fusion with the step before
    (whose bundles would otherwise wait for the answers) with no state and no timer round,
    and its bundles, closed after --max_bundle_time_mills, carry whatever arrived meanwhile.
    Bounded input is not gathered, nor
    is any input of the embedded local model, which answers each element as it comes, nor
    input `already_gathered`: the answers of another AskModel, which come in its gathered
    bundles (the step is fused behind it: no keyed hop between the two calls).

    An element whose request failed permanently reaches the dead-letter output as
    `to_replayable(element)` says (core/replay.py); with `keep_failed` it is also passed on
    with None (its row is still written). A `shadow` model's failure is passed on as the
    LlmPermanentError instead (no dead letter, no `to_replayable` needed), and its calls are
    counted as the shadow's (see the module).

    With `asks`, only the elements it is true of are asked; the others are passed on at once
    with None, in the same output. Rows of both then come from one step: a Partition and a
    Flatten of the two would cost the FnApiRunner (the DirectRunner) and portable runners a
    copy of every row, encoded and decoded, at the Flatten.
    """

    def __init__(self, config: LlmConfig, task: str, tier: str, to_data: Callable[[Any], dict],
                 to_replayable: Callable[[Any], Replayable] | None, keep_failed: bool = False,
                 clock: Callable[[], float] = time.time,
                 asks: Callable[[Any], bool] | None = None, answer_type: AnswerType = ModelAnswer,
                 shadow: bool = False, already_gathered: bool = False):
        super().__init__()
        self._config = config
        self._clock = clock  # processing time, for how long GatherForModel lets elements wait
        self._local = config.backend == "local"
        self._gathers = not (self._local or already_gathered)
        self._asks = asks
        self._answer_type = answer_type
        # The local model never fails: keep_failed has nothing to keep.
        self._fn = (_AskLocalModelDoFn(config, task, tier, to_data, asks, answer_type, shadow)
                    if self._local
                    else _AskModelDoFn(config, task, tier, to_data, asks, to_replayable,
                                       keep_failed, answer_type, shadow))

    def expand(self, elements):
        if not elements.is_bounded and self._gathers:
            return self._gathered_then_asked(elements)
        results = self._asked(elements)
        return results.answered, results[DEAD_LETTER]

    def _gathered_then_asked(self, elements):
        # Streaming bundles can be as small as one element, and a bundle waits for all of its
        # answers: gathered first, a bundle carries a worker's load. Only what is asked waits
        # in the gathering state.
        passed = None
        if self._asks is not None:
            asks = self._asks
            elements, unasked = elements | "SplitAsked" >> beam.Partition(
                lambda element, _: 0 if asks(element) else 1, 2)
            answer_type = self._answer_type
            passed = unasked | "PassUnasked" >> beam.Map(
                lambda element: answer_type(element, None)).with_output_types(answer_type)
        if self._config.gather_in_state:
            gathered = elements | "GatherForModel" >> GatherForModel(
                self._config.concurrency * self._config.fast_batch_size,
                self._config.batch_wait_ms / 1000.0, self._clock)
        else:
            gathered = elements | "HandOverToModel" >> beam.Reshuffle()
        results = self._asked(gathered)
        answered = results.answered
        if passed is not None:
            answered = (answered, passed) | "WithUnasked" >> beam.Flatten()
        return answered, results[DEAD_LETTER]

    def _asked(self, elements):
        return elements | "Ask" >> beam.ParDo(self._fn).with_output_types(
            self._answer_type, **{DEAD_LETTER: DeadLetter}).with_outputs(DEAD_LETTER,
                                                                        main="answered")
