"""Replaying event files as a live stream: which payload goes out when, re-timed to the present.

Pure: no Beam, no Pub/Sub. At a replay speed, events of all files share one timeline, so a
transaction and a metric that were 5 minutes apart stay 5 minutes apart (divided by the
speed); at rates, each file goes out at its own rate from the start. Each
event's `timestamp` is rewritten to the moment it is published: the first event to the start
of the replay, the others after it by their original gap divided by `speed`, so the stream
looks live to the pipeline (whose watermark follows the clock). Payloads without a readable
timestamp are sent unchanged right after the event before them, for the pipeline to
dead-letter.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone

import pyarrow.parquet as pq

from realtime_ai.core.parsing import to_json_payload


@dataclasses.dataclass(frozen=True)
class Scheduled:
    """One message of the replay: when to send it (seconds after the start), where, what."""

    offset_seconds: float
    stream: int  # index of the file it came from
    payload: str
    event_time: datetime | None  # the re-timed event time; None when the payload had none


def read_payloads(path: str) -> Iterator[str]:
    """The payloads of a local JSON-lines (optionally .gz) or Parquet file, in file order."""
    if path.lower().endswith(".parquet"):
        for row in pq.read_table(path).to_pylist():
            yield to_json_payload(row)
        return
    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                yield line.rstrip("\r\n")


def _event_time(payload: str) -> datetime | None:
    try:
        text = json.loads(payload)["timestamp"]
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(
        tzinfo=timezone.utc)


def iso_millis(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as Pub/Sub timestamp attributes expect."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z")


def speed_for_rate(times: list[datetime], events_per_second: float) -> float:
    """The replay speed at which `times` go out at `events_per_second` on average."""
    if len(times) < 2:
        return 1.0
    span = (max(times) - min(times)).total_seconds()
    return max(span, 1e-3) * events_per_second / (len(times) - 1)


def schedule(streams: Iterable[Iterable[str]], start: datetime, speed: float | None = None,
             rates: Sequence[float] | None = None, limit: int | None = None,
             steady: bool = False) -> list[Scheduled]:
    """The replay of `streams` (payload iterables) beginning at `start`: the first `limit`
    events of the merged timeline, at `speed` (1 = real time) on one timeline, or with
    `rates`, each stream at its own events per second from `start` (each its own timeline:
    at different rates, streams cannot keep their original spacing to each other). At a
    rate the recording's shape is kept (its busy hours go out faster than the rate, its
    quiet ones slower: the rate is the average) unless `steady`: then a stream's events go
    out evenly, 1 / rate apart, in the recording's order."""
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)
    readable = []  # per stream: (original time or None, position, payload)
    for payloads in streams:
        previous, entries = None, []
        for position, payload in enumerate(payloads):
            moment = _event_time(payload)
            # an unreadable timestamp travels with the event before it in its file
            entries.append((moment, moment or previous, position, payload))
            previous = moment or previous
        readable.append(entries)
    everyone_first = min((e[1] for entries in readable for e in entries if e[1] is not None),
                         default=None)
    timeline = []  # (offset, stream, position, payload, readable)
    for stream, entries in enumerate(readable):
        times = [e[0] for e in entries if e[0] is not None]
        if rates is not None:
            first, pace = min(times, default=None), speed_for_rate(times, rates[stream])
        else:
            first, pace = everyone_first, speed or 1.0
        evenly = rates is not None and steady
        if evenly:
            # In the recording's order; an event without a time stays after the one before it.
            entries = sorted(entries, key=lambda entry: (entry[1] or first or start, entry[2]))
        for index, (moment, placed, position, payload) in enumerate(entries):
            placed = placed or first
            if evenly:
                offset = index / rates[stream]
            else:
                offset = (placed - first).total_seconds() / pace if first and placed else 0.0
            timeline.append((offset, stream, position, payload, moment is not None))
    timeline.sort(key=lambda entry: entry[:3])
    replay = []
    for offset, stream, _, payload, has_time in timeline[:limit]:
        if not has_time:
            replay.append(Scheduled(offset, stream, payload, None))
            continue
        moment = start + timedelta(milliseconds=round(offset * 1000))
        record = json.loads(payload)
        record["timestamp"] = iso_millis(moment)
        replay.append(Scheduled(offset, stream, json.dumps(record), moment))
    return replay
