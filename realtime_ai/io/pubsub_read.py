"""Reading a Pub/Sub subscription on portable runners (Prism), where Beam's Python
ReadFromPubSub does not run.

A splittable DoFn behind an Impulse: one unsplittable, endless restriction, so there is exactly
one reader per subscription and one watermark. Each bundle pulls synchronously (up to 1000
messages a request) for at most BUNDLE_SECONDS, then checkpoints with
`tracker.defer_remainder(delay)`: Python's form of ProcessContinuation.resume(delay) (only the
legacy DirectRunner reads a ProcessContinuation; the Fn API harness does not). The checkpoint
makes the runner commit the bundle's output; the messages are acknowledged only then, from the
bundle finalizer, so delivery is at least once: a bundle that fails, or a job that stops before
the commit, leaves its messages to be delivered again once their ack deadline expires.

Each payload comes out as text, timestamped with `timestamp_attribute` (RFC 3339 or
milliseconds since the epoch) when given and readable, else with the message's publish time.
The watermark follows the timestamps read and never goes backwards: after a pull that drained
what the subscription had (fewer messages than asked for), it moves to that pull's oldest
timestamp; while pulls come back full there is a backlog, which Pub/Sub (and its emulator)
delivers in no particular order, so the watermark waits. With publish times, a subscription idle
for IDLE_SECONDS moves the watermark to the wall clock less WATERMARK_SLACK_SECONDS (Pub/Sub's
clock against ours), so windows close without new messages; with an attribute it cannot, as
the next message may carry any time.

On Prism (2.77), keep a GroupByKey or Reshuffle after the reader: a stage that sends nothing on
to another stage has its progress loop spin a core for as long as its bundle runs (it keeps
selecting a closed channel), and the reader's bundles run all the time.
"""
from __future__ import annotations

import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.io.iobase import WatermarkEstimator
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

MAX_MESSAGES_PER_PULL = 1000
# Pub/Sub holds a pull open for a while when there is nothing to deliver (the emulator for
# 0.5 s). A bundle lasts at most BUNDLE_SECONDS plus one pull: well within a 10 s ack deadline.
PULL_TIMEOUT_SECONDS = 5.0
# Pulling time per bundle: its output reaches later stages only when it commits, and its
# messages stay leased (unacknowledged) until then, so this bounds both latency and how close
# a lease comes to its ack deadline (10 s by default on Pub/Sub).
BUNDLE_SECONDS = 1.0
# Resume delay after a pull that found nothing: keeps an idle reader from spinning.
IDLE_RESUME_SECONDS = 0.25
IDLE_SECONDS = 3.0
WATERMARK_SLACK_SECONDS = 2.0
# As many as Google's client sends in one request.
ACK_IDS_PER_REQUEST = 1000

_LOGGER = logging.getLogger(__name__)


class _CheckpointOnlyTracker(OffsetRestrictionTracker):
    """Offsets count bundles. Splits only to checkpoint (fraction 0, what defer_remainder
    asks for), never for the runner: a second reader would report a second watermark."""

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder == 0:
            return super().try_split(fraction_of_remainder)
        return None

    def is_bounded(self):
        return False  # so a drain truncates the read instead of running it forever


class _EndlessRestriction(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, sys.maxsize)

    def create_tracker(self, restriction):
        return _CheckpointOnlyTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1  # the backlog is unknown; the size only guides splits, which never happen


class _PullWatermarkEstimator(WatermarkEstimator):
    """The watermark, plus when a pull last returned messages (wall-clock seconds), carried
    from bundle to bundle in the estimator state, as a bundle may run on a fresh DoFn. Only
    methods: the DoFn sees it through Beam's thread-safe wrapper, which wraps only callables."""

    def __init__(self, state):
        self._watermark, self._last_message_at = state

    def observe_timestamp(self, timestamp):
        pass  # set from whole pulls in advance(), not per element

    def current_watermark(self):
        return self._watermark

    def get_estimator_state(self):
        return self._watermark, self._last_message_at

    def advance(self, timestamp: Timestamp) -> None:
        if self._watermark is None or timestamp > self._watermark:
            self._watermark = timestamp

    def saw_messages(self, at: float) -> None:
        self._last_message_at = at

    def idle_seconds(self, now: float) -> float:
        return now - self._last_message_at


class _PullWatermarkProvider(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element, restriction):
        return None, time.time()  # a reader that starts idle counts as idle from its start

    def create_watermark_estimator(self, estimator_state):
        return _PullWatermarkEstimator(estimator_state)


def _event_time(message, timestamp_attribute: str | None) -> Timestamp | None:
    """The attribute's time, or None when the attribute is absent or unreadable."""
    value = message.attributes.get(timestamp_attribute) if timestamp_attribute else None
    if not value:
        return None
    try:
        return Timestamp(micros=int(value) * 1000)
    except ValueError:
        pass
    try:
        return Timestamp.from_rfc3339(value)
    except ValueError:
        return None


class _PullDoFn(beam.DoFn):
    def __init__(self, subscription: str, timestamp_attribute: str | None):
        self._subscription = subscription
        self._timestamp_attribute = timestamp_attribute
        # A job launched against the emulator reads it from every worker, including workers
        # started without the variable (an EXTERNAL worker pool).
        self._emulator_host = os.environ.get("PUBSUB_EMULATOR_HOST")
        self._read = Metrics.counter("realtime_ai", "pubsub_read")
        self._pull_errors = Metrics.counter("realtime_ai", "pubsub_pull_errors")
        # A job slower than its stream falls behind rather than dropping anything: pulls come
        # back full and the watermark waits. These say so.
        self._full_pulls = Metrics.counter("realtime_ai", "pubsub_full_pulls")
        self._lag = Metrics.gauge("realtime_ai", "pubsub_watermark_lag_seconds")
        self._publish_time_fallbacks = Metrics.counter("realtime_ai",
                                                       "pubsub_timestamp_attribute_unusable")

    def setup(self):
        if self._emulator_host:
            os.environ.setdefault("PUBSUB_EMULATOR_HOST", self._emulator_host)
        from google.cloud import pubsub_v1  # on the worker; honours PUBSUB_EMULATOR_HOST

        self._subscriber = pubsub_v1.SubscriberClient()

    def _pull(self) -> list:
        from google.api_core import exceptions

        try:
            # No client retries: this loop is the retry, and a bundle must not outlast its
            # leases. Other errors (no such subscription, no permission) fail the bundle, and
            # Prism fails the job with it.
            response = self._subscriber.pull(
                subscription=self._subscription, max_messages=MAX_MESSAGES_PER_PULL,
                retry=None, timeout=PULL_TIMEOUT_SECONDS)
        except exceptions.DeadlineExceeded:
            return []  # Pub/Sub holds an empty pull open until a message comes
        except (exceptions.ServiceUnavailable, exceptions.InternalServerError,
                exceptions.Aborted, exceptions.ResourceExhausted, exceptions.Unknown,
                exceptions.Cancelled) as error:
            self._pull_errors.inc()
            _LOGGER.warning("pull from %s failed, retrying: %s", self._subscription, error)
            return []
        return type(response).pb(response).received_messages  # protobuf, not proto-plus: faster

    def _acknowledge(self, ack_ids: list[str]) -> None:
        # Runs once the runner has committed the bundle. An error here is logged by Beam and
        # the messages come again after their ack deadline (duplicates, not losses).
        for start in range(0, len(ack_ids), ACK_IDS_PER_REQUEST):
            self._subscriber.acknowledge(subscription=self._subscription,
                                         ack_ids=ack_ids[start:start + ACK_IDS_PER_REQUEST])

    @beam.DoFn.unbounded_per_element()
    def process(self, _impulse,
                # before the SDF parameters: Beam passes those by keyword, this by position
                finalizer=beam.DoFn.BundleFinalizerParam,
                tracker=beam.DoFn.RestrictionParam(_EndlessRestriction()),
                watermark=beam.DoFn.WatermarkEstimatorParam(_PullWatermarkProvider())):
        # Prism sends FinalizeBundle after every bundle of this stage; Python's harness logs
        # a traceback for one that registered no callback, so each registers one. (One such
        # traceback per reader remains, at start: Prism also finalizes the stage that sizes
        # the restriction, where no DoFn code runs.)
        ack_ids = []
        finalizer.register(lambda: self._acknowledge(ack_ids))
        if tracker.try_claim(tracker.current_restriction().start):  # False once drained
            yield from self._pull_for_a_bundle(tracker, watermark, ack_ids)

    def _pull_for_a_bundle(self, tracker, watermark, ack_ids: list[str]):
        """Yields what one bundle pulls, keeping the ack ids, then checkpoints."""
        resume_delay = 0.0
        deadline = time.monotonic() + BUNDLE_SECONDS
        while True:
            received = self._pull()
            now = time.time()
            if not received:
                if (self._timestamp_attribute is None
                        and watermark.idle_seconds(now) >= IDLE_SECONDS):
                    watermark.advance(Timestamp(now - WATERMARK_SLACK_SECONDS))
                resume_delay = IDLE_RESUME_SECONDS
                break
            watermark.saw_messages(now)
            oldest = None
            for received_message in received:
                message = received_message.message
                publish_time = message.publish_time
                timestamp = _event_time(message, self._timestamp_attribute)
                if timestamp is None:
                    if self._timestamp_attribute:
                        self._publish_time_fallbacks.inc()
                    timestamp = Timestamp(seconds=publish_time.seconds,
                                          micros=publish_time.nanos // 1000)
                if oldest is None or timestamp < oldest:
                    oldest = timestamp
                ack_ids.append(received_message.ack_id)
                # Undecodable bytes become replacement characters, so the parser dead-letters
                # the message with its reason instead of the job failing on it.
                yield beam.window.TimestampedValue(
                    message.data.decode("utf-8", errors="replace"), timestamp)
            self._read.inc(len(received))
            if len(received) < MAX_MESSAGES_PER_PULL:
                watermark.advance(oldest)
            else:
                self._full_pulls.inc()
            current = watermark.current_watermark()
            if current is not None and current > MIN_TIMESTAMP:
                self._lag.set(round(now - current.micros / 1e6))
            if time.monotonic() >= deadline:
                break
        tracker.defer_remainder(Duration(seconds=resume_delay))

    def teardown(self):
        self._subscriber.close()


@beam.typehints.with_output_types(str)
class ReadPubSubPayloads(beam.PTransform):
    """PBegin -> PCollection[str]: the payloads of a subscription's messages as text,
    timestamped with `timestamp_attribute` or their publish time; acknowledged once the
    runner has committed them (at least once). Runs on portable runners (Prism)."""

    def __init__(self, subscription: str, timestamp_attribute: str | None = None):
        super().__init__()
        self._fn = _PullDoFn(subscription, timestamp_attribute)

    def expand(self, pbegin):
        return (pbegin
                | "Impulse" >> beam.Impulse()
                | "Pull" >> beam.ParDo(self._fn).with_output_types(str))
