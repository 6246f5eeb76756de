"""Where the dashboard's events come from: Pub/Sub subscriptions, or a batch run's outputs.

A feed's `run(hub)` delivers events to the hub until cancelled. Nothing here imports Beam.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Protocol

import pyarrow.parquet as pq

from realtime_ai.core.live import (
    ALERT,
    DATASET_KINDS,
    LiveEvent,
    MalformedMessage,
    event_from_row,
    replay_order,
)
from realtime_ai.core.rows import iso

LOG = logging.getLogger(__name__)
RESUBSCRIBE_SECONDS = 2.0  # after the stream broke (emulator or network restart)
SHUTDOWN_SECONDS = 10.0  # for the stream to end when the dashboard stops
DEAD_LETTER_DATASET = "dead_letter"


class Hub(Protocol):
    def publish(self, event: LiveEvent) -> None: ...

    def receive(self, stream: str, data: bytes) -> None: ...

    def dead_letter(self, row: dict) -> None: ...

    def malformed(self, stream: str, error: str) -> None: ...


class PubSubFeed:
    """Messages of one subscription (projects/P/subscriptions/S), acknowledged on arrival:
    the dashboard is a view, the job's Parquet outputs are the record. When the stream
    breaks (an emulator restart, a subscription not created yet) it subscribes again."""

    def __init__(self, stream: str, subscription: str):
        self.stream = stream
        self.subscription = subscription

    async def run(self, hub: Hub) -> None:
        from google.cloud import pubsub_v1  # honours PUBSUB_EMULATOR_HOST

        loop = asyncio.get_running_loop()

        def on_message(message) -> None:
            loop.call_soon_threadsafe(hub.receive, self.stream, message.data)
            message.ack()

        while True:
            subscriber = pubsub_v1.SubscriberClient()
            future = subscriber.subscribe(self.subscription, on_message)
            try:
                await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                # the documented clean stop: cancel, then wait for the stream to end
                future.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(future.result, SHUTDOWN_SECONDS)
                subscriber.close()
                raise
            except Exception as error:  # noqa: BLE001 - any broken stream: subscribe again
                LOG.warning("subscription %s: %s; subscribing again in %.0f s",
                            self.subscription, str(error).splitlines()[0][:200],
                            RESUBSCRIBE_SECONDS)
            subscriber.close()
            await asyncio.sleep(RESUBSCRIBE_SECONDS)


def _read_dataset(output_dir: str, name: str) -> list[dict]:
    path = os.path.join(output_dir, name)
    if not os.path.isdir(path) or not any(
            f.endswith(".parquet") for _, _, files in os.walk(path) for f in files):
        return []
    return pq.read_table(path).to_pylist()


def _analysis_by_alert(datasets: dict[str, list[dict]]) -> dict[tuple[str, str, str], str]:
    """The deep model's analysis behind each transaction alert, from the transaction's row
    (a metric alert's summary already holds its explanation)."""
    return {("transaction", row["transaction_id"], iso(row["event_time"])): row["analysis"]
            for row in datasets.get("transactions", []) if row.get("analysis")}


def load_outputs(output_dir: str) -> tuple[list[LiveEvent], list[dict], int]:
    """A batch run's outputs as events in event-time order, its dead letters, and how many
    rows could not be read as events."""
    datasets = {name: _read_dataset(output_dir, name) for name in DATASET_KINDS}
    analyses = _analysis_by_alert(datasets)
    events, unreadable = [], 0
    for name, kind in DATASET_KINDS.items():
        for row in datasets[name]:
            if kind == ALERT:
                row = {**row, "analysis": analyses.get(
                    (row.get("kind"), row.get("subject"), iso(row["event_time"])))}
            try:
                events.append(event_from_row(kind, row))
            except MalformedMessage:
                unreadable += 1
    return replay_order(events), _read_dataset(output_dir, DEAD_LETTER_DATASET), unreadable


class ReplayFeed:
    """A batch run's outputs (--output of the main job), replayed in event-time order:
    `speed` event-time seconds a wall-clock second; 0 sends everything at once.

    Event time is that of the record (a transaction, a metric value, an alert) or the end of
    an insight's window. Dead letters carry no event time: they are counted at the start."""

    def __init__(self, output_dir: str, speed: float,
                 sleep: Callable[[float], object] = asyncio.sleep):
        self.output_dir = output_dir
        self.speed = speed
        self._sleep = sleep

    async def run(self, hub: Hub) -> None:
        events, dead_letters, unreadable = await asyncio.to_thread(load_outputs, self.output_dir)
        for _ in range(unreadable):
            hub.malformed("replay", "an output row that is not an event")
        for row in dead_letters:
            hub.dead_letter(row)
        if not events:
            LOG.warning("nothing to replay under %s", self.output_dir)
            return
        LOG.warning("replaying %d outputs from %s to %s at %gx", len(events),
                    iso(events[0].event_time), iso(events[-1].event_time), self.speed)
        first = events[0].event_time
        started = time.monotonic()
        for event in events:
            if self.speed > 0:
                due = (event.event_time - first).total_seconds() / self.speed
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    await self._sleep(wait)
            else:
                await self._sleep(0)  # let the server send what was published
            hub.publish(event)

