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
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp


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
    # Fires when the watermark passes FLUSH_AT.
    FLUSH = TimerSpec("flush", TimeDomain.WATERMARK)

    def __init__(self, sequence: KeyedSequence, streaming: bool):
        self._sequence = sequence
        self._next_index = 0 if streaming else -1  # which waiting entry the timer moves to

    def process(
        self,
        element,
        timestamp=beam.DoFn.TimestampParam,
        buffer=beam.DoFn.StateParam(BUFFER),
        flush_at=beam.DoFn.StateParam(FLUSH_AT),
        flush=beam.DoFn.TimerParam(FLUSH),
    ):
        _, value = element
        micros = timestamp.micros
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
        flush=beam.DoFn.TimerParam(FLUSH),
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
        live = self._sequence.restore(saved.read())
        outputs = [
            beam.window.TimestampedValue(self._sequence.advance(live, value),
                                         Timestamp(micros=micros))
            for micros, _, value in ready
        ]
        saved.write(self._sequence.save(live))
        yield from outputs


class OrderedByKey(beam.PTransform):
    """PCollection[(key, element)] -> outputs of `sequence`, per key in event-time order.

    Each element's event time is its Beam timestamp; outputs keep their element's timestamp.
    `streaming` picks the timer policy (see the module docstring); results are the same.
    """

    def __init__(self, sequence: KeyedSequence, streaming: bool, label: str | None = None):
        super().__init__(label)
        self._sequence = sequence
        self._streaming = streaming

    def expand(self, keyed):
        # The outputs are whatever `sequence.advance` returns: not the (key, element) input type
        # that Beam would otherwise infer for them.
        return keyed | "InEventTimeOrder" >> beam.ParDo(
            _OrderedStatefulDoFn(self._sequence, self._streaming)).with_output_types(Any)
