"""Streaming: gather elements that arrive in small bundles into bundles worth a worker's load.

`AskModel` keeps a bundle's requests in flight together and waits for them in
`finish_bundle`, so a bundle of one element waits one model latency alone: streaming runners
often hand over bundles that small (every TestStream event, a Dataflow work item per key), and
then the step is no faster than awaiting one call per event. `GatherForModel` buffers elements
in keyed state until it holds `capacity` of them or the first has waited `max_wait_seconds`,
then emits them together, each with its own timestamp; the model step behind it gets them as
one bundle.

Elements are keyed by worker process and one of `SHARDS_PER_WORKER` shards, so a worker's
elements stay together while several gathered bundles per worker can be in flight at once.
"""
from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms.combiners import CountCombineFn
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    CombiningValueStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

SHARDS_PER_WORKER = 4
_WORKER = uuid.uuid4().hex  # a new value in every worker process that imports this module


class _KeyByWorkerShard(beam.DoFn):
    def __init__(self, shards: int):
        self._shards = shards

    def process(self, element):
        yield f"{_WORKER}-{random.randrange(self._shards)}", element


class _GatherDoFn(beam.DoFn):
    """Buffers (key, element) in state; emits the elements, with their own timestamps, when
    `capacity` are held, `max_wait_seconds` after the first arrived, or when the watermark
    reaches the oldest of them (at the latest when the input is drained).

    The event-time timer sits at the oldest element's timestamp so that, on runners that hold
    the output watermark at a pending timer, buffered elements are never late downstream.
    """

    # (timestamp in micros, element) of each element waiting, in arrival order.
    BUFFER = BagStateSpec("buffer", coders.TupleCoder(
        (coders.VarIntCoder(), coders.FastPrimitivesCoder())))
    # How many elements BUFFER holds, without reading it.
    COUNT = CombiningValueStateSpec("count", coders.VarIntCoder(), CountCombineFn())
    # The oldest timestamp in BUFFER, in micros.
    OLDEST = ReadModifyWriteStateSpec("oldest", coders.VarIntCoder())
    # Processing time when the first waiting element has waited long enough.
    WAITED_ENOUGH = TimerSpec("waited_enough", TimeDomain.REAL_TIME)
    # Event time of the oldest waiting element: flush once the watermark gets there.
    WATERMARK_REACHED = TimerSpec("watermark_reached", TimeDomain.WATERMARK)

    def __init__(self, capacity: int, max_wait_seconds: float, clock: Callable[[], float]):
        self._capacity = capacity
        self._max_wait = max_wait_seconds
        self._clock = clock

    def process(self, keyed, timestamp=beam.DoFn.TimestampParam,
                buffer=beam.DoFn.StateParam(BUFFER), count=beam.DoFn.StateParam(COUNT),
                oldest=beam.DoFn.StateParam(OLDEST),
                waited_enough=beam.DoFn.TimerParam(WAITED_ENOUGH),
                watermark_reached=beam.DoFn.TimerParam(WATERMARK_REACHED)):
        buffer.add((timestamp.micros, keyed[1]))
        count.add(1)
        held = count.read()
        if held == 1:
            waited_enough.set(Timestamp.of(self._clock() + self._max_wait))
        if held == 1 or timestamp.micros < oldest.read():
            oldest.write(timestamp.micros)
            watermark_reached.set(timestamp)
        if held >= self._capacity:
            waited_enough.clear()
            watermark_reached.clear()
            yield from self._flush(buffer, count, oldest)

    @on_timer(WAITED_ENOUGH)
    def on_waited_enough(self, buffer=beam.DoFn.StateParam(BUFFER),
                         count=beam.DoFn.StateParam(COUNT), oldest=beam.DoFn.StateParam(OLDEST),
                         watermark_reached=beam.DoFn.TimerParam(WATERMARK_REACHED)):
        watermark_reached.clear()
        yield from self._flush(buffer, count, oldest)

    @on_timer(WATERMARK_REACHED)
    def on_watermark_reached(self, buffer=beam.DoFn.StateParam(BUFFER),
                             count=beam.DoFn.StateParam(COUNT),
                             oldest=beam.DoFn.StateParam(OLDEST),
                             waited_enough=beam.DoFn.TimerParam(WAITED_ENOUGH)):
        waited_enough.clear()
        yield from self._flush(buffer, count, oldest)

    @staticmethod
    def _flush(buffer, count, oldest):
        waiting = list(buffer.read())
        for state in (buffer, count, oldest):
            state.clear()
        for micros, element in waiting:
            yield beam.window.TimestampedValue(element, Timestamp(micros=micros))


E = beam.typehints.TypeVariable("E")


@beam.typehints.with_input_types(E)
@beam.typehints.with_output_types(E)
class GatherForModel(beam.PTransform):
    """PCollection[E] -> PCollection[E], the same elements and timestamps, emitted in groups
    of up to `capacity` that wait at most `max_wait_seconds` (see the module docstring).

    `clock` gives processing time in seconds (tests pass the TestStream's, which starts at
    0); `shards`: gathering keys per worker.
    """

    def __init__(self, capacity: int, max_wait_seconds: float,
                 clock: Callable[[], float] = time.time, shards: int = SHARDS_PER_WORKER):
        super().__init__()
        self._capacity = capacity
        self._max_wait = max_wait_seconds
        self._clock = clock
        self._shards = shards

    def expand(self, elements):
        return (
            elements
            | "KeyByWorkerShard" >> beam.ParDo(_KeyByWorkerShard(self._shards))
            | "Gather" >> beam.ParDo(_GatherDoFn(self._capacity, self._max_wait, self._clock))
        )
