"""Replaying event files as a live stream: which payload goes out when, re-timed to the present.

Pure: no Beam, no Pub/Sub. Events of all files share one timeline, so a transaction and a
metric that were 5 minutes apart stay 5 minutes apart (divided by the replay speed). Each
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
from collections.abc import Iterable, Iterator
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
             events_per_second: float | None = None, limit: int | None = None) -> list[Scheduled]:
    """The replay of `streams` (payload iterables) beginning at `start`: the first `limit`
    events of the merged timeline, at `speed` (1 = real time) or `events_per_second`."""
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)
    timeline = []  # (original time, unreadable, stream, position, payload)
    for stream, payloads in enumerate(streams):
        previous = None
        for position, payload in enumerate(payloads):
            moment = _event_time(payload)
            # an unreadable timestamp travels with the event before it in its file
            timeline.append((moment or previous, moment is None, stream, position, payload))
            previous = moment or previous
    first = min((entry[0] for entry in timeline if entry[0] is not None), default=None)
    timeline = [(entry[0] or first, *entry[1:]) for entry in timeline]
    timeline.sort(key=lambda entry: (entry[0] or start, entry[2], entry[3]))
    timeline = timeline[:limit]
    if events_per_second is not None:
        speed = speed_for_rate([entry[0] for entry in timeline if not entry[1]],
                               events_per_second)
    speed = speed or 1.0
    replay = []
    for original, unreadable, stream, _, payload in timeline:
        offset = (original - first).total_seconds() / speed if first else 0.0
        if unreadable:
            replay.append(Scheduled(offset, stream, payload, None))
            continue
        moment = start + timedelta(milliseconds=round(offset * 1000))
        record = json.loads(payload)
        record["timestamp"] = iso_millis(moment)
        replay.append(Scheduled(offset, stream, json.dumps(record), moment))
    return replay
