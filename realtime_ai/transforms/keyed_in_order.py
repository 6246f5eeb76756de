"""Per-key processing in event-time order, once per event: the Beam wiring of core/keyed.py.

Bounded input (batch): each key's records are grouped (a bundle's records of a key as one
list: bundled_group_by_key.py) and processed in one sorted pass. The group keeps the earliest
timestamp of its records (OUTPUT_AT_EARLIEST), so on runners that track watermarks exactly
(Prism, Flink, Dataflow) the outputs, stamped with their own event times, are never behind
the watermark of the windows downstream.

Unbounded input (streaming): one state cell per key holds the whole `KeyState` (one read and
one write per element or timer, with an explicit versioned coder). A watermark timer sits at
the earliest record waiting, rounded up to the release step (one second); it holds the output
watermark there, and when it fires at T the records up to T are processed in order and the
timer moves on to the next one waiting. Outputs trail the watermark by up to one step, which
the windows downstream allow for (their grace is at least a step). An expiry timer
`state_ttl` after the frontier clears an idle key's cell; it is set once and moved on when it
fires, not at every release.

Both paths make the same decisions (`KeyedStep`), so batch and streaming give the same rows.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, TimestampCombiner, TimestampedValue
from apache_beam.utils import windowed_value
from apache_beam.utils.timestamp import Timestamp

from realtime_ai.core.keyed import (
    KeyedStep,
    KeyState,
    decode_state,
    encode_state,
)
from realtime_ai.core.records import DeadLetter
from realtime_ai.core.rows import late_dead_letter
from realtime_ai.transforms import sdk_workarounds
from realtime_ai.transforms.bundled_group_by_key import BundledGroupByKey

LATE = "late"
NAMESPACE = "realtime_ai"


class KeyStateCoder(beam.coders.Coder):
    """The one state cell per key, in its plain, versioned encoding (see core/keyed.py)."""

    def encode(self, value: KeyState) -> bytes:
        return encode_state(value)

    def decode(self, encoded: bytes) -> KeyState:
        return decode_state(encoded)

    def is_deterministic(self) -> bool:
        return True


class _StreamingInOrderDoFn(beam.DoFn):
    KEY_STATE = ReadModifyWriteStateSpec("key_state", KeyStateCoder())
    # At the earliest record waiting: fires once the watermark passes it.
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    # `state_ttl` after the frontier: the key has been idle that long. Set at a key's first
    # release, then moved on only when it fires (KeyedStep.expiry_check).
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, step: KeyedStep, source: str):
        self._step = step
        self._duplicates = Metrics.counter(NAMESPACE, f"{source}_duplicates")

    def setup(self):
        sdk_workarounds.cheap_state_cache_sizing()
        sdk_workarounds.pipelined_state_commits()
        sdk_workarounds.prompt_bundle_ends()

    def start_bundle(self):
        # KeyStates made in this bundle, by id: only these may be changed in place. One read
        # from the runner's cache is still the committed value; changing it in place would
        # corrupt the cache if the bundle then failed.
        self._owned: dict[int, KeyState] = {}

    def _state(self, cell) -> KeyState:
        state = cell.read()
        if state is None:
            state = KeyState()
        elif id(state) not in self._owned:
            state = state.copy()
        self._owned[id(state)] = state
        return state

    def process(self, element, timestamp=beam.DoFn.TimestampParam,
                cell=beam.DoFn.StateParam(KEY_STATE), release=beam.DoFn.TimerParam(RELEASE)):
        _, record = element
        state = self._state(cell)
        offer = self._step.offer(state, timestamp.micros, record)
        if offer.duplicate:
            self._duplicates.inc()
            return
        if offer.late_seconds is not None:
            yield TaggedOutput(LATE, (record, offer.late_seconds))
            return
        if offer.set_timer is not None:
            release.set(Timestamp(micros=offer.set_timer))
        cell.write(state)
        if offer.output is not None:
            yield TimestampedValue(offer.output, timestamp)

    @on_timer(RELEASE)
    def on_release(self, fire_time=beam.DoFn.TimestampParam,
                   cell=beam.DoFn.StateParam(KEY_STATE), release=beam.DoFn.TimerParam(RELEASE),
                   expire=beam.DoFn.TimerParam(EXPIRE)):
        state = self._state(cell)
        first_release = state.frontier is None
        outputs = self._step.release(state, fire_time.micros)
        if state.flush_at is not None:
            release.set(Timestamp(micros=state.flush_at))
        expiry = self._step.expiry_time(state)
        if first_release and expiry is not None:
            expire.set(Timestamp(micros=expiry))
        cell.write(state)
        for micros, output in outputs:
            yield TimestampedValue(output, Timestamp(micros=micros))

    @on_timer(EXPIRE)
    def on_expire(self, fire_time=beam.DoFn.TimestampParam,
                  cell=beam.DoFn.StateParam(KEY_STATE), expire=beam.DoFn.TimerParam(EXPIRE)):
        state = cell.read()
        if state is None:
            return
        check_again = self._step.expiry_check(state, fire_time.micros)
        if check_again is None:
            cell.clear()
        else:
            expire.set(Timestamp(micros=check_again))


class _BatchInOrderDoFn(beam.DoFn):
    def __init__(self, step: KeyedStep, source: str):
        self._step = step
        self._duplicates = Metrics.counter(NAMESPACE, f"{source}_duplicates")

    def setup(self):
        sdk_workarounds.rarer_full_collections()
        sdk_workarounds.prompt_bundle_ends()

    def process(self, element, windowed=beam.DoFn.WindowedValueParam):
        _, entries = element
        from_plain = self._step.sequence.record_from_plain
        processed = self._step.run_sorted((micros, from_plain(plain)) for micros, plain in entries)
        if processed.duplicates:
            self._duplicates.inc(processed.duplicates)
        windows = windowed.windows
        for micros, output in processed.outputs:
            # stamped in micros, as Beam's worker stamps what it decodes: a Timestamp object
            # (0.65 us to make, checks included) is made only if a later step asks for one
            yield windowed_value.create(output, micros, windows)


def _keyed_plain(key_of: Callable[[Any], str], to_plain: Callable[[Any], Any], record,
                 micros: int) -> tuple[str, tuple[int, Any]]:
    # Plain (lists, numbers, text): Beam encodes these natively across the GroupByKey, where
    # a record object would be pickled (several times the CPU of the rest of its trip).
    return key_of(record), (micros, to_plain(record))


class Ordered(NamedTuple):
    outputs: beam.PCollection  # what the sequence's `advance` returned, at the record's time
    dead_letter: beam.PCollection  # DeadLetter of each record too late for its key


class InEventTimeOrder(beam.PTransform):
    """PCollection[record] -> Ordered(outputs, dead_letter): the records of each key (`key_of`)
    processed once each (redeliveries dropped and counted as `<source>_duplicates`) in
    event-time order by `step`, see the module docstring. A record's event time is its Beam
    timestamp; outputs keep it; they are of `output_type`. Streaming only: a record behind
    its key's frontier by more than the allowed lateness becomes a dead letter of `source`.
    Subclasses declare their record type (`beam.typehints.with_input_types`)."""

    def __init__(self, source: str, key_of: Callable[[Any], str], step: KeyedStep,
                 output_type: Any = Any):
        super().__init__()
        self._source = source
        self._key_of = key_of
        self._step = step
        self._output_type = output_type

    def expand(self, records) -> Ordered:
        key_of = self._key_of
        if records.is_bounded:
            # Keyed and made plain as they are listed for the grouping: no steps of their own.
            outputs = (
                records
                | "GroupByKey" >> BundledGroupByKey(
                    beam.WindowInto(GlobalWindows(),
                                    timestamp_combiner=TimestampCombiner.OUTPUT_AT_EARLIEST),
                    functools.partial(_keyed_plain, key_of, self._step.sequence.record_to_plain))
                | "InEventTimeOrder" >> beam.ParDo(_BatchInOrderDoFn(
                    self._step, self._source)).with_output_types(self._output_type)
            )
            return Ordered(outputs, records.pipeline | "NothingLate" >> beam.Create(
                []).with_output_types(DeadLetter))
        # Typed as before records were: the key's coder is the one of the state (and of the
        # savepoints) of earlier versions. Outputs are whatever the sequence returns: not the
        # (key, record) input type that Beam would otherwise infer for them.
        keyed = records | "KeyBy" >> beam.Map(
            lambda record: (key_of(record), record)).with_output_types(tuple[Any, Any])
        results = keyed | "InEventTimeOrder" >> beam.ParDo(
            _StreamingInOrderDoFn(self._step, self._source)).with_output_types(
                self._output_type).with_outputs(LATE, main="outputs")
        source, lateness = self._source, self._step.allowed_lateness_seconds
        late = results[LATE] | "LateRecords" >> beam.MapTuple(
            lambda record, behind: late_dead_letter(source, record, behind, lateness)
        ).with_output_types(DeadLetter)
        return Ordered(results.outputs, late)
