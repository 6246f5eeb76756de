"""Per-key processing in event-time order, whatever order elements arrive in.

Elements wait in a per-key buffer until the watermark passes them; a watermark timer then
hands the ready ones, sorted, to a pure step function that owns the key's state. The state
is read once and written once per timer firing, not per element.

Timer policy: the timer is set at the earliest buffered event time (an out-of-order early
element pulls it forward); when it fires at T, elements at or before T are processed. Then:
- streaming: the timer moves to the earliest element still buffered. A pending timer holds
  the output watermark at its time, so outputs are never behind the downstream watermark
  (a later timer would let downstream windows close before buffered elements come out);
- batch: the timer moves to the latest element still buffered. The watermark jumps to the
  end at once, so each key fires twice instead of once per distinct timestamp, which would
  re-read the buffer once per element (quadratic); batch downstream stages drop nothing.

Late data: an element at or before the key's frontier (the latest time already processed)
cannot be put in order any more. Within `allowed_lateness` of the frontier it is processed at
once against the current state; later than that it goes to the `late` output, for the
dead-letter sink: never silently dropped.

Expiry: a key idle for longer than `state_ttl` of event time starts afresh, and the EXPIRE
timer then clears its stored state, so state stays bounded however many customers or
metrics come and go over months.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Duration, Timestamp

LATE = "late"


@dataclasses.dataclass(frozen=True)
class KeyedSequence:
    """A Beam-free description of what to do with one key's elements, in order."""

    restore: Callable[[Any], Any]  # saved state (None for a new key) -> live object
    advance: Callable[[Any, Any], Any]  # (live object, element) -> output
    save: Callable[[Any], Any]  # live object -> saved state (plain, compact data)
    order_key: Callable[[Any], tuple]  # deterministic total order among equal event times


def split_ready(buffered: Iterable[tuple], fire_micros: int) -> tuple[list, list]:
    """Sort (event micros, order key, element) entries; split at the timer's time."""
    entries = sorted(buffered, key=lambda entry: entry[:2])
    ready = [entry for entry in entries if entry[0] <= fire_micros]
    waiting = [entry for entry in entries if entry[0] > fire_micros]
    return ready, waiting


class _OrderedStatefulDoFn(beam.DoFn):
    """Buffers (key, element) pairs and runs `sequence` over them in event-time order."""

    # Elements not yet processed, as (event time in micros, order key, element).
    BUFFER = BagStateSpec("buffer", PickleCoder())
    # The time the FLUSH timer is set for, in micros; absent when no timer is pending.
    FLUSH_AT = ReadModifyWriteStateSpec("flush_at", VarIntCoder())
    # The key's own state, as returned by `sequence.save`.
    SAVED = ReadModifyWriteStateSpec("saved", PickleCoder())
    # The latest event time processed, in micros: elements at or before it are late.
    FRONTIER = ReadModifyWriteStateSpec("frontier", VarIntCoder())
    # Fires when the watermark passes FLUSH_AT.
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)
    # Fires `state_ttl` after the frontier: the key has been idle that long.
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, sequence: KeyedSequence, streaming: bool,
                 allowed_lateness: Duration, state_ttl: Duration):
        self._sequence = sequence
        self._next_index = 0 if streaming else -1  # which waiting entry the timer moves to
        self._lateness_micros = allowed_lateness.micros
        self._ttl_micros = state_ttl.micros

    def process(
        self,
        element,
        timestamp=beam.DoFn.TimestampParam,
        buffer=beam.DoFn.StateParam(BUFFER),
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
        frontier=beam.DoFn.StateParam(FRONTIER),
        saved=beam.DoFn.StateParam(SAVED),
        flush=beam.DoFn.TimerParam(FLUSH),
    ):
        _, value = element
        micros = timestamp.micros
        processed_up_to = frontier.read()
        if processed_up_to is not None and micros <= processed_up_to:
            if processed_up_to - micros > self._lateness_micros:
                yield TaggedOutput(LATE, (value, (processed_up_to - micros) / 1e6))
                return
            live = self._sequence.restore(saved.read())
            output = self._sequence.advance(live, value)
            saved.write(self._sequence.save(live))
            yield beam.window.TimestampedValue(output, timestamp)
            return
        buffer.add((micros, self._sequence.order_key(value), value))
        pending = flush_at.read()
        if pending is None or micros < pending:
            flush.set(Timestamp(micros=micros))
            flush_at.write(micros)

    @on_timer(FLUSH)
    def on_flush(
        self,
        fire_time=beam.DoFn.TimestampParam,
        buffer=beam.DoFn.StateParam(BUFFER),
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
        saved=beam.DoFn.StateParam(SAVED),
        frontier=beam.DoFn.StateParam(FRONTIER),
        flush=beam.DoFn.TimerParam(FLUSH),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ):
        ready, waiting = split_ready(buffer.read(), fire_time.micros)
        buffer.clear()
        for entry in waiting:
            buffer.add(entry)
        if waiting:
            next_micros = waiting[self._next_index][0]
            flush.set(Timestamp(micros=next_micros))
            flush_at.write(next_micros)
        else:
            flush_at.clear()
        if not ready:
            return
        previous = frontier.read()
        live = self._sequence.restore(saved.read())
        outputs = []
        for micros, _, value in ready:
            live = self._expire_if_idle(live, previous, micros)
            outputs.append(beam.window.TimestampedValue(self._sequence.advance(live, value),
                                                        Timestamp(micros=micros)))
            previous = micros
        saved.write(self._sequence.save(live))
        frontier.write(previous)
        expire.set(Timestamp(micros=previous + self._ttl_micros))
        yield from outputs

    def _expire_if_idle(self, live, previous_micros: int | None, micros: int):
        """A fresh state after an idle gap longer than the TTL, whether or not the EXPIRE
        timer has fired yet: so results never depend on when timers fire."""
        if previous_micros is not None and micros - previous_micros > self._ttl_micros:
            return self._sequence.restore(None)
        return live

    @on_timer(EXPIRE)
    def on_expire(
        self,
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
        saved=beam.DoFn.StateParam(SAVED),
        frontier=beam.DoFn.StateParam(FRONTIER),
    ):
        if flush_at.read() is None:  # nothing waiting: the key has really been idle
            saved.clear()
            frontier.clear()


class Ordered(NamedTuple):
    outputs: beam.PCollection  # what `sequence.advance` returned, at the element's time
    late: beam.PCollection  # (element, seconds behind the key's frontier)


class OrderedByKey(beam.PTransform):
    """PCollection[(key, element)] -> Ordered(outputs, late), per key in event-time order.

    Each element's event time is its Beam timestamp; outputs keep their element's timestamp.
    `streaming` picks the timer policy (see the module docstring); results are the same.
    """

    def __init__(self, sequence: KeyedSequence, streaming: bool, allowed_lateness_seconds: float,
                 state_ttl_seconds: float):
        super().__init__()
        self._fn = _OrderedStatefulDoFn(sequence, streaming,
                                        Duration.of(allowed_lateness_seconds),
                                        Duration.of(state_ttl_seconds))

    def expand(self, keyed) -> Ordered:
        # The outputs are whatever `sequence.advance` returns: not the (key, element) input type
        # that Beam would otherwise infer for them.
        results = keyed | "InEventTimeOrder" >> beam.ParDo(self._fn).with_outputs(
            LATE, main="outputs")
        return Ordered(results.outputs, results[LATE])
