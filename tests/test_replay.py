"""The live replay's schedule: one timeline, re-timed to the start, spacing kept / speed."""
import itertools
import json
import time
from datetime import datetime, timezone

import pytest

from realtime_ai.samples import __main__ as samples_cli
from realtime_ai.samples.replay import iso_millis, schedule, speed_for_rate

START = datetime(2026, 11, 25, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _event(second: int, name: str = "m") -> str:
    return json.dumps({"metric": name, "value": second,
                       "timestamp": f"2026-01-05T00:{second // 60:02d}:{second % 60:02d}Z"})


def test_events_of_all_files_share_one_timeline_and_keep_their_spacing():
    replay = schedule([[_event(0), _event(30)], [_event(10, "tx")]], START)
    assert [(m.offset_seconds, m.stream) for m in replay] == [(0, 0), (10, 1), (30, 0)]
    assert [json.loads(m.payload)["timestamp"] for m in replay] == [
        "2026-11-25T12:00:00.123Z", "2026-11-25T12:00:10.123Z", "2026-11-25T12:00:30.123Z"]
    assert [json.loads(m.payload)["value"] for m in replay] == [0, 10, 30]  # fields kept


def test_speed_divides_the_gaps_and_rate_sets_the_speed():
    events = [_event(s) for s in (0, 60, 120)]
    assert [m.offset_seconds for m in schedule([events], START, speed=60)] == [0, 1, 2]
    assert [m.offset_seconds for m in schedule([events], START, rates=[2])] == [0, 0.5, 1]
    assert speed_for_rate([START, START], 5) > 0  # no division by zero on equal times


def test_each_stream_goes_out_at_its_own_rate_from_the_start():
    sparse = [_event(s, "tx") for s in range(0, 600, 60)]  # 10 events over 9 minutes
    dense = [_event(s) for s in range(0, 100, 10)]  # 10 events over 90 s
    replay = schedule([sparse, dense], START, rates=[5, 50])
    for stream, rate in ((0, 5), (1, 50)):
        offsets = [m.offset_seconds for m in replay if m.stream == stream]
        assert offsets[0] == 0 and (len(offsets) - 1) / offsets[-1] == pytest.approx(rate)
    assert [m.offset_seconds for m in replay] == sorted(m.offset_seconds for m in replay)


def test_a_steady_rate_spaces_events_evenly_in_their_recorded_order():
    # A busy minute then a quiet one: at the average rate its events would bunch up.
    busy_then_quiet = [_event(s, "tx") for s in (0, 1, 2, 3, 4, 5, 6, 7, 8, 119)]
    shaped = [m.offset_seconds for m in schedule([busy_then_quiet], START, rates=[5])]
    assert shaped[1] - shaped[0] < 0.1  # the recording's shape: 8 events in its first 0.3 s
    steady = schedule([busy_then_quiet, [_event(s) for s in (5, 3)]], START, rates=[5, 1],
                      steady=True)
    assert [m.offset_seconds for m in steady if m.stream == 0] == [k / 5 for k in range(10)]
    # sorted by their recorded times, re-timed in that order
    assert [json.loads(m.payload)["value"] for m in steady if m.stream == 1] == [3, 5]
    assert [json.loads(m.payload)["timestamp"] for m in steady if m.stream == 1] == [
        "2026-11-25T12:00:00.123Z", "2026-11-25T12:00:01.123Z"]


def test_a_steady_rate_keeps_an_event_without_a_time_after_the_one_before_it():
    events = [_event(4), "not json", _event(2)]
    payloads = [m.payload for m in schedule([events], START, rates=[10], steady=True)]
    assert payloads[2] == "not json" and json.loads(payloads[0])["value"] == 2


def test_steady_needs_a_rate(capsys):
    with pytest.raises(SystemExit):
        samples_cli.main(["publish", "--metrics", __file__, "--metrics-topic",
                          "projects/p/topics/t", "--steady"])
    assert "--steady needs --rate" in capsys.readouterr().err


def _timed_sends(monkeypatch):
    sent: list[tuple[str, float]] = []

    class Recording:
        def __init__(self, topic):
            self.topic = topic

        def send(self, data, event_time, attribute):
            sent.append((self.topic, time.monotonic()))
            return lambda: None

    monkeypatch.setattr(samples_cli, "_destination", Recording)
    return sent


@pytest.mark.parametrize("rates, expected", [
    (["--rate", "40"], {"t": 40, "m": 40}),  # one number: that rate for EACH stream
    (["--rate", "transactions=20", "--rate", "metrics=80"], {"t": 20, "m": 80}),
])
def test_publish_sends_each_stream_at_its_rate(rates, expected, monkeypatch, tmp_path):
    # The samples' metrics are 10x denser in time than their transactions: with one
    # timeline, a rate over all files sent metrics far faster than asked.
    sent = _timed_sends(monkeypatch)
    (tmp_path / "t.jsonl").write_text("".join(
        _event(s, "tx") + "\n" for s in range(0, 2400, 100)))  # 24 over 40 minutes
    (tmp_path / "m.jsonl").write_text("".join(
        _event(s) + "\n" for s in range(0, 240, 10)))  # 24 over 4 minutes
    assert samples_cli.main(["publish", "--transactions", str(tmp_path / "t.jsonl"),
                             "--transactions-topic", "projects/p/topics/t",
                             "--metrics", str(tmp_path / "m.jsonl"),
                             "--metrics-topic", "projects/p/topics/m", *rates]) == 0
    for name, rate in expected.items():
        times = [moment for topic, moment in sent if topic == f"projects/p/topics/{name}"]
        assert len(times) == 24
        # the median gap: a stall of the machine delays a send or two, which the schedule
        # then catches up, and would skew a rate over the whole span (13.6/s for 20/s once)
        gaps = sorted(later - earlier for earlier, later in itertools.pairwise(times))
        measured = 1 / gaps[len(gaps) // 2]
        assert measured == pytest.approx(rate, rel=0.15), name


def test_unreadable_payloads_travel_unchanged_after_the_event_before_them():
    replay = schedule([[_event(0), "not json", _event(20)]], START, limit=2)
    assert [m.payload for m in replay][1] == "not json"
    assert replay[1].event_time is None and replay[1].offset_seconds == 0
    assert len(replay) == 2  # the limit counts every message


def test_times_have_the_millisecond_precision_of_pubsub_attributes():
    assert iso_millis(START) == "2026-11-25T12:00:00.123Z"


@pytest.mark.parametrize("argv, message", [
    (["publish", "--metrics", "x.jsonl"], "--metrics needs --metrics-topic"),
    (["publish", "--rate", "0"], "must be a positive number of events per second"),
    (["publish", "--rate", "orders=5"], "'orders' is not a stream"),
    (["publish", "--metrics", "m.jsonl", "--metrics-topic", "projects/p/topics/m",
      "--transactions", "t.jsonl", "--transactions-topic", "projects/p/topics/t",
      "--rate", "metrics=5"], "--rate gives no rate for transactions"),
])
def test_publish_command_refuses_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        samples_cli.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_ctrl_c_stops_publishing_with_a_line_not_a_traceback(monkeypatch, capsys):
    from realtime_ai.samples import __main__ as samples_cli

    class Interrupted:
        sent = 0

        def send(self, data, event_time, attribute):
            self.sent += 1
            if self.sent == 3:
                raise KeyboardInterrupt
            return lambda: None

    monkeypatch.setattr(samples_cli, "_destination", lambda topic: Interrupted())
    assert samples_cli.main(["publish", "--metrics", "samples/metrics.jsonl",
                             "--metrics-topic", "projects/p/topics/t", "--speed", "1e9"]) == 130
    assert "stopped (Ctrl-C) after 2 of 6480 events" in capsys.readouterr().out


def test_kafka_messages_share_requests(monkeypatch):
    # kafka-python sends a request per message unless told to wait: at 330 messages a second
    # that took the producer 0.46 cores and the broker 0.39 on the job's own machine.
    import kafka

    made = {}

    class Admin:
        def __init__(self, **kwargs):
            pass

        def create_topics(self, topics):
            pass

        def close(self):
            pass

    class Producer:
        def __init__(self, **kwargs):
            made.update(kwargs)

    monkeypatch.setattr(kafka, "KafkaAdminClient", Admin)
    monkeypatch.setattr(kafka, "KafkaProducer", Producer)
    samples_cli._destination("kafka://127.0.0.1:9092/transactions")
    assert made == {"bootstrap_servers": ["127.0.0.1:9092"],
                    "linger_ms": samples_cli.KAFKA_LINGER_MS}
    assert samples_cli.KAFKA_LINGER_MS > 0
