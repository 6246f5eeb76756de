"""python -m realtime_ai.samples generate|publish ... (see --help)."""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib
import sys
import time
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from realtime_ai.io.sources import KAFKA_PATTERN
from realtime_ai.samples.generate import generate, parse_start
from realtime_ai.samples.replay import iso_millis, read_payloads, schedule

FORMATS = ("jsonl", "jsonl.gz", "parquet")
SEND_TIMEOUT_SECONDS = 60.0
# How long the Kafka producer lets a message wait for others to share its request, in ms
# (kafka-python's default: 0, a request per message). At 330 messages a second one producer
# took 0.46 cores and the broker 0.39 that way, 0.23 and 0.07 with 20 ms (measured side by
# side here): CPU that a replay on the job's own machine took from the job.
KAFKA_LINGER_MS = 20


def _write(rows: list[dict], path: pathlib.Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    text = "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows)
    if fmt == "jsonl.gz":
        # mtime=0 keeps the bytes identical across runs
        with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
            fh.write(text.encode())
    else:
        path.write_text(text)


def _write_stream(rows: list[dict], out: pathlib.Path, name: str, fmt: str,
                  shards: int) -> None:
    if shards == 1:
        _write(rows, out / f"{name}.{fmt}", fmt)
        return
    for shard in range(shards):
        _write(rows[shard::shards], out / f"{name}-{shard:03d}-of-{shards:03d}.{fmt}", fmt)


def generate_command(args: argparse.Namespace) -> None:
    samples = generate(args.seed, args.customers, parse_start(args.start), args.hours,
                       args.metrics_hours)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _write_stream(samples.transactions, out, "transactions", args.format, args.shards)
    _write_stream(samples.metrics, out, "metrics", args.format, args.shards)
    _write(samples.transaction_labels, out / "transactions_labels.jsonl", "jsonl")
    _write(samples.metric_labels, out / "metrics_labels.jsonl", "jsonl")
    print(f"wrote {len(samples.transactions)} transactions "
          f"({len(samples.transaction_labels)} labelled fraud) and {len(samples.metrics)} "
          f"metric values ({len(samples.metric_labels)} labelled anomalies) to {out}/")


class _PubSubTopic:
    """Publishes to a Pub/Sub topic (the emulator when PUBSUB_EMULATOR_HOST is set)."""

    def __init__(self, topic: str):
        from google.cloud import pubsub_v1

        parts = topic.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "topics":
            raise SystemExit(f"error: {topic} is not projects/PROJECT_ID/topics/NAME")
        if os.environ.get("PUBSUB_EMULATOR_HOST"):  # the emulator forgets topics on restart
            from realtime_ai.io.pubsub_admin import ensure_topic

            ensure_topic(parts[1], parts[3])
        self._topic = topic
        self._client = pubsub_v1.PublisherClient()

    def send(self, data: bytes, event_time: datetime | None, attribute: str):
        attributes = {attribute: iso_millis(event_time)} if event_time and attribute else {}
        future = self._client.publish(self._topic, data, **attributes)
        return lambda: future.result(timeout=SEND_TIMEOUT_SECONDS)


class _KafkaTopic:
    """Produces to a Kafka topic (created if missing), record time = the event time."""

    def __init__(self, spec: str):
        from kafka import KafkaAdminClient, KafkaProducer
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        match = KAFKA_PATTERN.match(spec)
        if not match:
            raise SystemExit(f"error: {spec} is not kafka://HOST:PORT/TOPIC")
        servers, self._topic = match["servers"].split(","), match["topic"]
        admin = KafkaAdminClient(bootstrap_servers=servers)
        try:
            admin.create_topics([NewTopic(self._topic, num_partitions=1, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass  # the state we want
        finally:
            admin.close()
        self._producer = KafkaProducer(bootstrap_servers=servers, linger_ms=KAFKA_LINGER_MS)

    def send(self, data: bytes, event_time: datetime | None, attribute: str):
        millis = int(event_time.timestamp() * 1000) if event_time else None
        headers = [(attribute, iso_millis(event_time).encode())] if (
            event_time and attribute) else None
        future = self._producer.send(self._topic, value=data, timestamp_ms=millis,
                                     headers=headers)
        return lambda: future.get(timeout=SEND_TIMEOUT_SECONDS)


def _destination(topic: str):
    return _KafkaTopic(topic) if topic.startswith("kafka://") else _PubSubTopic(topic)


def publish_command(args: argparse.Namespace) -> int:
    streams = [(path, topic) for path, topic in (
        (args.transactions, args.transactions_topic), (args.metrics, args.metrics_topic))
        if path]
    if not streams:
        raise SystemExit("error: nothing to publish: give --transactions and/or --metrics")
    for path, _ in streams:
        if not pathlib.Path(path).is_file():
            raise SystemExit(f"error: no such file: {path}")
    destinations = [_destination(topic) for _, topic in streams]
    start = datetime.now(timezone.utc)
    replay = schedule([read_payloads(path) for path, _ in streams], start, args.speed,
                      args.rates, args.limit, args.steady)
    if args.dump:
        _dump(replay, streams, pathlib.Path(args.dump))
    began = time.monotonic()
    pending, next_report, sent = [], began + 5, 0
    try:
        for message in replay:
            delay = message.offset_seconds - (time.monotonic() - began)
            if delay > 0:
                _settle(pending)  # whatever was due earlier is out before this one
                time.sleep(delay)
            pending.append(destinations[message.stream].send(
                message.payload.encode("utf-8"), message.event_time, args.event_time_attribute))
            sent += 1
            if time.monotonic() >= next_report:
                print(f"published {sent}/{len(replay)}", flush=True)
                next_report += 5
        _settle(pending)
    except KeyboardInterrupt:
        print(f"stopped (Ctrl-C) after {sent} of {len(replay)} events", flush=True)
        return 130  # the shell's status for an interrupted command
    print(f"published {len(replay)} events in {time.monotonic() - began:.1f} s "
          f"(event times from {iso_millis(start)})")
    return 0


STREAM_NAMES = ("transactions", "metrics")


def _rate(text: str) -> tuple[str | None, float]:
    """One --rate: `N` (every stream) or `STREAM=N`."""
    name, _, number = text.rpartition("=")
    if name and name not in STREAM_NAMES:
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a stream: give N or {'=N, '.join(STREAM_NAMES)}=N")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{number!r} is not a number of events per "
                                         "second") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of events per second")
    return name or None, value


def _stream_rates(given: list[tuple[str | None, float]] | None,
                  published: list[str]) -> list[float] | None:
    """The events per second of each published stream, in order; None without --rate;
    ValueError when a stream has none."""
    if not given:
        return None
    by_name = dict(given)
    everyone = by_name.pop(None, None)
    missing = [name for name in published if name not in by_name and everyone is None]
    if missing:
        raise ValueError(f"--rate gives no rate for {', '.join(missing)}: add --rate "
                         f"{missing[0]}=N, or give one --rate N for every stream")
    return [by_name.get(name, everyone) for name in published]


def _settle(pending: list) -> None:
    for wait in pending:
        wait()
    pending.clear()


def _dump(replay, streams, folder: pathlib.Path) -> None:
    """Write what will be published, per input file, for a batch run over the same events."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (path, _) in enumerate(streams):
        name = pathlib.Path(path).name.removesuffix(".gz").removesuffix(".parquet")
        lines = [m.payload + "\n" for m in replay if m.stream == index]
        (folder / (name if name.endswith(".jsonl") else name + ".jsonl")).write_text(
            "".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m realtime_ai.samples",
                                     description="Sample events for realtime-ai.")
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write seeded sample events and their labels")
    gen.add_argument("--out", required=True, help="output folder, e.g. samples/")
    gen.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    gen.add_argument("--customers", type=int, default=200, help="customers (default 200)")
    gen.add_argument("--hours", type=int, default=48, help="hours of transactions (default 48)")
    gen.add_argument("--metrics-hours", type=float, default=3.0,
                     help="hours of metrics, one value per metric every 10 s (default 3)")
    gen.add_argument("--start", default="2026-01-05T00:00:00Z",
                     help="first moment, ISO-8601 (default 2026-01-05T00:00:00Z)")
    gen.add_argument("--format", choices=FORMATS, default="jsonl",
                     help="jsonl (default), jsonl.gz or parquet")
    gen.add_argument("--shards", type=int, default=1,
                     help="split each stream over this many files (default 1)")
    gen.set_defaults(run=generate_command)
    pub = commands.add_parser(
        "publish", help="publish event files to Pub/Sub as a live stream, re-timed to now",
        description="Publish event files to Pub/Sub topics as a live stream: events of all "
                    "files in one timeline, each re-timed to the moment it is sent (the first "
                    "now, the others after it by their original gap / --speed), or each file "
                    "at its own --rate. Honours "
                    "PUBSUB_EMULATOR_HOST (and then creates the topics); Kafka topics are "
                    "created if missing, with the event time as the record's time.")
    pub.add_argument("--transactions", help="transactions file (.jsonl, .jsonl.gz, .parquet)")
    pub.add_argument("--transactions-topic",
                     help="its topic: projects/P/topics/T (Pub/Sub) or kafka://HOST:PORT/TOPIC")
    pub.add_argument("--metrics", help="metrics file (.jsonl, .jsonl.gz, .parquet)")
    pub.add_argument("--metrics-topic", help="its topic, in the same forms")
    pace = pub.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=None,
                      help="replay speed: 1 = real time (default), 60 = an hour a minute")
    pace.add_argument("--rate", type=_rate, action="append", default=None,
                      metavar="[STREAM=]N",
                      help="events per second of EACH stream, each from now on its own "
                           "timeline: --rate 12 sends 12/s of transactions and 12/s of "
                           "metrics; --rate transactions=5 --rate metrics=50 sets them apart "
                           "(N sets every stream not named)")
    pub.add_argument("--steady", action="store_true",
                     help="with --rate: send each stream's events evenly, 1/N s apart, in "
                          "their recorded order, rather than at N a second on average with "
                          "the recording's busy and quiet hours kept (the samples' busy "
                          "hours then go out at about twice N)")
    pub.add_argument("--limit", type=int, default=None,
                     help="publish only the first N events of the timeline")
    pub.add_argument("--event-time-attribute", default="event_time",
                     help="attribute (Kafka: header) carrying each event time (RFC 3339), for "
                          "--event_time_attribute of the pipeline; '' for none "
                          "(default event_time)")
    pub.add_argument("--dump", default=None,
                     help="also write the re-timed events, one JSON-lines file per input, "
                          "to this folder (to compare with a batch run)")
    pub.set_defaults(run=publish_command)
    args = parser.parse_args(argv)
    if getattr(args, "shards", 1) < 1:
        parser.error("--shards must be at least 1")
    for name in ("speed", "limit"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be positive")
    if getattr(args, "steady", False) and not args.rate:
        parser.error("--steady needs --rate")
    for name in ("transactions", "metrics"):
        if getattr(args, name, None) and not getattr(args, f"{name}_topic"):
            parser.error(f"--{name} needs --{name}-topic")
    if args.command == "publish":
        try:
            args.rates = _stream_rates(args.rate, [name for name in STREAM_NAMES
                                                   if getattr(args, name)])
        except ValueError as error:
            parser.error(str(error))
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
