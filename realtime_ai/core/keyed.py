"""One key's records processed once each, in event-time order. Pure: no Beam.

Everything the pipeline keeps for a key (a customer, a metric) is one `KeyState`: the key's own
state (a customer's history, a metric's statistics), the latest event time processed (the
*frontier*), the records waiting for the watermark, and the ids of the records seen within the
dedupe horizon. It is saved as one plain, versioned value (`encode_state` / `decode_state`:
JSON of lists and numbers, then the seen ids as raw integer pairs; never pickled classes),
so a savepoint or a Dataflow update survives renamed or moved classes, and a format change is
a new version that reads the old ones.

`KeyedStep` decides what happens to each record; the Beam wiring (transforms/keyed_in_order.py)
only stores the state and sets timers:
- a record already seen (same event id) within `dedupe_horizon` is a duplicate: no output, and
  no feature changes (Pub/Sub and Kafka redeliver);
- a record after the frontier waits until the watermark passes it (`release`), then all ready
  records are processed sorted by (event time, order key), so input order never matters;
- a record at or behind the frontier cannot be put in order any more: within
  `allowed_lateness` it is processed at once against the current state, beyond that it is late
  (the caller dead-letters it);
- a key idle for longer than `state_ttl` of event time starts afresh.
Batch input is all there at once: `run_sorted` processes a key's records in order in one pass,
with the same outcome as streaming input arriving in order.
"""
from __future__ import annotations

import array
import base64
import dataclasses
import hashlib
import json
import struct
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

# Version 2: the JSON of [2, saved, frontier, flush_at, [[micros, record], ...]], a newline,
# then `seen`: little-endian int64 pairs (event id hash, event micros), oldest first. JSON
# never writes a raw newline, so the first one ends it. A day of ids (8,640 for a metric every
# 10 s: 138 KB) goes with every write, so it is copied as bytes: as base64 inside the JSON
# (version 1: [1, saved, frontier, flush_at, waiting, base64 of the pairs], still read) each
# write packed, encoded and escaped it again, 2.6 ms a write.
STATE_FORMAT_VERSION = 2
_V1_FORMAT_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (a float of seconds loses the last digit)."""
    return (moment - _EPOCH) // _MICRO


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@dataclasses.dataclass(frozen=True)
class KeyedSequence:
    """How one stream's records are processed per key, in order; all plain functions."""

    # saved plain state (None for a new key) -> live object, holding no reference into it
    restore: Callable[[Any], Any]
    advance: Callable[[Any, Any], Any]  # (live object, record) -> output; updates the object
    save: Callable[[Any], Any]  # live object -> new plain state (lists, numbers, text)
    order_key: Callable[[Any], tuple]  # deterministic order among records of equal event time
    event_id: Callable[[Any], str]  # the same for a record and its redeliveries
    record_to_plain: Callable[[Any], Any]  # a waiting record as plain data, and back
    record_from_plain: Callable[[Any], Any]


def id_hash(event_id: str) -> int:
    """A 64-bit hash of an event id: what is kept to recognise its redeliveries. Two ids of
    one key colliding within the horizon (about 1 in 10^11 for a day of a metric every
    second) would drop the second record as a redelivery."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(),
                          "little", signed=True)


@dataclasses.dataclass(frozen=True)
class OrderingSettings:
    allowed_lateness_micros: int
    state_ttl_micros: int
    dedupe_horizon_micros: int
    # Streaming: waiting records are released in steps of this much event time (the release
    # timer is rounded up to a multiple of it), so a busy key takes one timer per step, not
    # one per distinct timestamp. Outputs then trail the watermark by up to one step: windows
    # downstream must allow at least that much grace. 0: one release per timestamp.
    release_step_micros: int = 0

    @classmethod
    def of_seconds(cls, allowed_lateness: float, state_ttl: float, dedupe_horizon: float,
                   release_step: float = 0.0) -> OrderingSettings:
        return cls(round(allowed_lateness * 1e6), round(state_ttl * 1e6),
                   round(dedupe_horizon * 1e6), round(release_step * 1e6))


class KeyState:
    """Everything kept for one key, as plain data except `live`: the sequence's object, made
    from `saved` on first use and saved back only when the state is encoded, so a key touched
    by many records in a row is restored once."""

    __slots__ = ("saved", "live", "save_live", "frontier", "flush_at", "waiting", "seen",
                 "encoded_size")

    def __init__(self, saved: Any = None, frontier: int | None = None,
                 flush_at: int | None = None, waiting: list | None = None,
                 seen: SeenIds | None = None, encoded_size: int | None = None):
        self.saved = saved  # the sequence's plain state; stale once `live` is set
        self.live: Any = None
        self.save_live: Callable[[Any], Any] | None = None  # the sequence's `save`
        self.frontier = frontier  # latest event time processed, in micros
        self.flush_at = flush_at  # when the release timer is set for, in micros
        # [micros, plain record] of the records waiting for the watermark
        self.waiting: list[list] = waiting if waiting is not None else []
        # id_hash(event id) and event micros of every record processed or waiting within the
        # horizon, in insertion order, which is (nearly) event-time order: pruned from the front
        self.seen = seen if seen is not None else SeenIds()
        # Bytes of its latest encoding (None until encoded or decoded): what a runner's state
        # cache can weigh it by without walking every object in it.
        self.encoded_size = encoded_size

    def live_object(self, sequence: KeyedSequence) -> Any:
        if self.live is None:
            self.live = sequence.restore(self.saved)
            self.save_live = sequence.save
        return self.live

    def plain_saved(self) -> Any:
        return self.save_live(self.live) if self.live is not None else self.saved

    def copy(self) -> KeyState:
        """An independent copy: what a runner cached must not change before it is committed
        (`save` returns new data and `restore` keeps no reference into it)."""
        return KeyState(self.plain_saved(), self.frontier, self.flush_at, list(self.waiting),
                        self.seen.copy(), self.encoded_size)


_PAIR = struct.Struct("<qq")  # (event id hash, event micros), little-endian


class SeenIds:
    """The ids of the records a key has seen within the dedupe horizon, oldest first: a dict
    for lookups, beside the same pairs already packed as saved (`_PAIR`s). Encoding then
    copies bytes instead of packing every pair again (why: see STATE_FORMAT_VERSION)."""

    __slots__ = ("_micros", "_packed")

    def __init__(self, packed: bytes = b""):
        pairs = array.array("q", packed)
        if sys.byteorder != "little":
            pairs.byteswap()
        self._micros: dict[int, int] = dict(zip(pairs[0::2], pairs[1::2], strict=True))
        self._packed = bytearray(packed)

    def __contains__(self, id_hash: int) -> bool:
        return id_hash in self._micros

    def __len__(self) -> int:
        return len(self._micros)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeenIds) and self._packed == other._packed

    def add(self, id_hash: int, micros: int) -> None:
        self._micros[id_hash] = micros
        self._packed += _PAIR.pack(id_hash, micros)

    def forget_before(self, micros: int) -> None:
        """Forgets the oldest ids up to the first seen at or after `micros`. Insertion order
        is (nearly) event-time order, so this keeps at most a few older ids a little longer."""
        # Read from the packed pairs, not the dict: a dict keeps the slots of the keys
        # deleted from its front until it is resized, and iterating it walks them all again
        # (at a metric's 8,640 ids a day, 10 us a record instead of well under 1).
        packed = self._packed
        if not packed or _PAIR.unpack_from(packed)[1] >= micros:
            return  # as the loop below would, without making its iterator (most records)
        seen = self._micros
        pairs = _PAIR.iter_unpack(packed)
        forgotten = 0
        for id_hash, seen_at in pairs:
            if seen_at >= micros:
                break
            del seen[id_hash]
            forgotten += 1
        del pairs  # lets go of the bytearray's buffer before it is resized
        del self._packed[:forgotten * _PAIR.size]

    def packed(self) -> bytes:
        return bytes(self._packed)

    def copy(self) -> SeenIds:
        duplicate = SeenIds.__new__(SeenIds)
        duplicate._micros = dict(self._micros)
        duplicate._packed = bytearray(self._packed)
        return duplicate


def encode_state(state: KeyState) -> bytes:
    head = json.dumps([STATE_FORMAT_VERSION, state.plain_saved(), state.frontier,
                       state.flush_at, state.waiting], separators=(",", ":")).encode()
    data = b"\n".join((head, state.seen.packed()))
    state.encoded_size = len(data)
    return data


def decode_state(data: bytes) -> KeyState:
    head, newline, seen = data.partition(b"\n")
    value = json.loads(head)
    version = value[0] if isinstance(value, list) and value else None
    if version == STATE_FORMAT_VERSION and newline:
        _, saved, frontier, flush_at, waiting = value
    elif version == _V1_FORMAT_VERSION and not newline:
        _, saved, frontier, flush_at, waiting, packed = value
        seen = base64.b64decode(packed)
    else:
        raise ValueError(f"key state format {version!r} is not one this code reads "
                         f"(it reads {_V1_FORMAT_VERSION} and {STATE_FORMAT_VERSION}): restore "
                         "with the version that wrote it, or add a migration")
    return KeyState(saved, frontier, flush_at, waiting, SeenIds(seen), len(data))


class Offer(NamedTuple):
    """What became of one arriving record (exactly one field is set, or none if it waits)."""

    output: Any = None  # processed at once (behind the frontier, within the lateness)
    late_seconds: float | None = None  # beyond the allowed lateness: to dead letters
    duplicate: bool = False
    set_timer: int | None = None  # the release timer moves to this time (micros)


class Processed(NamedTuple):
    outputs: list[tuple[int, Any]]  # (event micros, output) in event-time order
    duplicates: int  # records dropped as redeliveries


_DUPLICATE = Offer(duplicate=True)
_WAITING = Offer()


class KeyedStep:
    """The decisions for one stream (see the module docstring); holds no per-key data."""

    def __init__(self, sequence: KeyedSequence, settings: OrderingSettings):
        self.sequence = sequence
        self._settings = settings

    @property
    def allowed_lateness_seconds(self) -> float:
        return self._settings.allowed_lateness_micros / 1e6

    def offer(self, state: KeyState, micros: int, record: Any) -> Offer:
        """A record arrives in streaming."""
        event_id = id_hash(self.sequence.event_id(record))
        if event_id in state.seen:
            return _DUPLICATE
        if state.frontier is not None and micros <= state.frontier:
            behind = state.frontier - micros
            if behind > self._settings.allowed_lateness_micros:
                return Offer(late_seconds=behind / 1e6)
            state.seen.add(event_id, micros)
            return Offer(output=self.sequence.advance(state.live_object(self.sequence), record))
        state.seen.add(event_id, micros)
        state.waiting.append([micros, self.sequence.record_to_plain(record)])
        release_at = self._release_time(micros)
        if state.flush_at is None or release_at < state.flush_at:
            state.flush_at = release_at
            return Offer(set_timer=release_at)
        return _WAITING

    def release(self, state: KeyState, up_to_micros: int) -> list[tuple[int, Any]]:
        """The watermark passed `up_to_micros`: (micros, output) of every record waiting up to
        then, in order. `state.flush_at` is left where the release timer goes next (the
        earliest record still waiting, rounded up to the release step), or None."""
        order_key = self.sequence.order_key
        from_plain = self.sequence.record_from_plain
        ready = [(micros, from_plain(plain)) for micros, plain in state.waiting
                 if micros <= up_to_micros]
        state.waiting = [entry for entry in state.waiting if entry[0] > up_to_micros]
        state.flush_at = (self._release_time(min(micros for micros, _ in state.waiting))
                          if state.waiting else None)
        ready.sort(key=lambda entry: (entry[0], order_key(entry[1])))
        outputs = [(micros, self._advance(state, micros, record)) for micros, record in ready]
        self._forget_old_ids(state)
        return outputs

    def run_sorted(self, entries: Iterable[tuple[int, Any]]) -> Processed:
        """Batch: a key's (micros, record) entries, all of them, processed in order from a new
        state; duplicates are dropped as in streaming."""
        order_key = self.sequence.order_key
        event_id = self.sequence.event_id
        state = KeyState()
        outputs = []
        duplicates = 0
        for micros, record in sorted(entries, key=lambda entry: (entry[0],
                                                                 order_key(entry[1]))):
            record_id = id_hash(event_id(record))
            if record_id in state.seen:
                duplicates += 1
                continue
            state.seen.add(record_id, micros)
            outputs.append((micros, self._advance(state, micros, record)))
            self._forget_old_ids(state)
        return Processed(outputs, duplicates)

    def expiry_time(self, state: KeyState) -> int | None:
        """When an idle key's state may be forgotten, in micros."""
        if state.frontier is None:
            return None
        return state.frontier + self._settings.state_ttl_micros

    def expiry_check(self, state: KeyState, fired_micros: int) -> int | None:
        """The expiry timer, set once per key (moving it on every release would cost a timer
        write each), fired at `fired_micros`: when to look again, or None if the key has
        been idle for `state_ttl` and nothing waits (its state may be cleared)."""
        if state.waiting:
            return fired_micros + self._settings.state_ttl_micros
        expiry = self.expiry_time(state)
        return expiry if expiry is not None and expiry > fired_micros else None

    def _release_time(self, micros: int) -> int:
        step = self._settings.release_step_micros
        return -(-micros // step) * step if step > 0 else micros

    def _advance(self, state: KeyState, micros: int, record: Any) -> Any:
        # A fresh state after an idle gap longer than the TTL, whether or not the expiry timer
        # has fired yet: results never depend on when timers fire.
        ttl = self._settings.state_ttl_micros
        if state.frontier is not None and micros - state.frontier > ttl:
            state.saved, state.live = None, None
        output = self.sequence.advance(state.live_object(self.sequence), record)
        state.frontier = micros if state.frontier is None else max(state.frontier, micros)
        return output

    def _forget_old_ids(self, state: KeyState) -> None:
        if state.frontier is not None:
            state.seen.forget_before(state.frontier - self._settings.dedupe_horizon_micros)
