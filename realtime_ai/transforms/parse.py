"""Parse raw payloads into records; everything invalid goes to the dead-letter output."""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import TimestampedValue

from realtime_ai.core.parsing import ParseFailure, parse_metric, parse_transaction
from realtime_ai.core.records import DeadLetter, MetricRecord, Transaction
from realtime_ai.transforms import sdk_workarounds

DEAD_LETTER = "dead_letter"


class Parsed(NamedTuple):
    valid: beam.PCollection  # records, each timestamped with its event time
    dead_letter: beam.PCollection  # DeadLetter(source, payload, error)


class _ParseDoFn(beam.DoFn):
    def __init__(self, source: str, parse: Callable, max_bytes: int):
        self._source = source
        self._parse = parse
        self._max_bytes = max_bytes
        self._parsed = Metrics.counter("realtime_ai", f"{source}_parsed")
        self._dead = Metrics.counter("realtime_ai", f"{source}_dead_lettered")

    def setup(self):
        # The first stage of a streaming job: the stages whose processors a worker makes
        # after this one get the shorter sampling.
        sdk_workarounds.prompt_bundle_ends()

    def process(self, payload: str):
        result = self._parse(payload, self._max_bytes)
        if isinstance(result, ParseFailure):
            self._dead.inc()
            yield TaggedOutput(DEAD_LETTER, DeadLetter(self._source, payload, result.reason))
        else:
            self._parsed.inc()
            yield TimestampedValue(result, result.event_time.timestamp())


@beam.typehints.with_input_types(str)
class _Parse(beam.PTransform):
    def __init__(self, source: str, parse: Callable, max_bytes: int, record_type: type):
        super().__init__()
        self._fn = _ParseDoFn(source, parse, max_bytes)
        self._record_type = record_type

    def expand(self, payloads) -> Parsed:
        results = payloads | "Parse" >> beam.ParDo(self._fn).with_output_types(
            self._record_type, **{DEAD_LETTER: DeadLetter}).with_outputs(DEAD_LETTER,
                                                                         main="valid")
        return Parsed(results.valid, results[DEAD_LETTER])


class ParseTransactions(_Parse):
    """PCollection[str] -> Parsed(valid=Transaction, dead_letter=DeadLetter)."""

    def __init__(self, max_record_bytes: int):
        super().__init__("transactions", parse_transaction, max_record_bytes, Transaction)


class ParseMetrics(_Parse):
    """PCollection[str] -> Parsed(valid=MetricRecord, dead_letter=DeadLetter)."""

    def __init__(self, max_record_bytes: int):
        super().__init__("metrics", parse_metric, max_record_bytes, MetricRecord)
