"""The live dashboard: its board (pure), websockets, /metrics and the command line; served by
a real uvicorn, fed by the test through the same path as Pub/Sub messages."""
import asyncio
import json
import socket
import subprocess
import sys
import urllib.request
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from websockets.sync.client import connect

from realtime_ai.core import live
from realtime_ai.core.records import (
    ALERTS_SCHEMA,
    INSIGHTS_SCHEMA,
    METRICS_SCHEMA,
    TRANSACTIONS_SCHEMA,
)
from realtime_ai.dashboard import __main__ as cli
from realtime_ai.dashboard.feeds import ReplayFeed, load_outputs
from realtime_ai.llm.accounting import load_prices
from realtime_ai.llm.base import LlmConfig
from tests.dashboard_helpers import (
    QueueFeed,
    RunningDashboard,
    alert,
    insight,
    metric_record,
)

LOCAL = LlmConfig(backend="local")


def _messages(ws, count, timeout=5.0):
    return [json.loads(ws.recv(timeout=timeout)) for _ in range(count)]


def _nothing_arrives(ws, seconds=1.0):
    try:
        message = ws.recv(timeout=seconds)
    except TimeoutError:
        return True
    raise AssertionError(f"unexpected message: {message}")


@pytest.fixture()
def dashboard():
    feed = QueueFeed()
    running = RunningDashboard([feed], LOCAL)
    running.feed = feed
    yield running
    running.stop()


def test_board_drops_redeliveries_and_assigns_metric_alerts_to_their_dashboard():
    board = live.LiveBoard(load_prices())
    point = live.event_from_message("metrics", json.dumps(
        metric_record("api.latency_ms", "checkout", 120.0)).encode())
    assert board.add(point, now=0.0)
    metric_alert = live.event_from_message("alerts", json.dumps(alert(1)).encode())
    assert board.add(metric_alert, now=0.0)
    assert not board.add(metric_alert, now=0.5)  # Pub/Sub delivers at least once
    assert board.dashboard_of(metric_alert) == "checkout"
    assert [e.kind for e in board.dashboard_backlog("checkout")] == ["alert"]
    assert board.dashboard_backlog("nobody") == []
    assert board.stats(now=1.0)["events"] == {"metric": 1, "alert": 1}


def test_transaction_alerts_and_insights_belong_to_the_transactions_dashboard():
    board = live.LiveBoard(load_prices())
    fraud = live.event_from_message("alerts", json.dumps(
        alert(2, subject="tx-1", kind="transaction")).encode())
    window = live.event_from_message("insights", json.dumps(
        {**insight("transactions", 1, "2 of 9 payments rated high risk"),
         "metric_count": 0, "alert_ids": [fraud.key], "transaction_count": 9,
         "escalations": 2, "high_risk_share": 0.222222,
         "risk_factors": ["new country"]}).encode())
    assert board.add(fraud, now=0.0) and board.add(window, now=0.0)
    assert [e.kind for e in board.dashboard_backlog("transactions")] == ["alert", "insight"]
    sent = window.message()
    assert sent["alert_ids"] == [fraud.key] and sent["escalations"] == 2
    assert sent["risk_factors"] == ["new country"]


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({**alert(1), "event_time": "yesterday"}).encode(), "event_time"),
    (json.dumps({k: v for k, v in alert(1).items() if k != "summary"}).encode(), "summary"),
])
def test_malformed_messages_are_named(body, reason):
    with pytest.raises(live.MalformedMessage, match=reason):
        live.event_from_message("alerts", body)


def test_figures_from_what_was_received():
    board = live.LiveBoard(load_prices())
    for minute in range(4):
        row = {**insight("checkout", minute), "llm_latency_ms": 100.0 * (minute + 1)}
        board.add(live.event_from_message("insights", json.dumps(row).encode()), now=100.0)
    stats = board.stats(now=101.0)
    assert stats["latency_p50_ms"] == 200.0 and stats["latency_p99_ms"] == 400.0
    # gpt-4o-mini: 1000 x 0.15 + 100 x 0.60 per million tokens, four calls
    assert stats["cost_per_minute_usd"] == pytest.approx(4 * 210e-6)
    assert stats["events_per_second"] == pytest.approx(4 / live.RATE_SECONDS)
    assert board.stats(now=200.0)["cost_per_minute_usd"] == 0.0  # a minute later: none


def test_figures_stay_bounded_when_nobody_reads_them():
    board = live.LiveBoard(load_prices())
    for second in range(1000):
        row = {**insight("checkout", 0), "window_start": f"2026-01-05T00:00:{second % 60:02d}Z",
               "dashboard_id": f"d{second}"}
        board.add(live.event_from_message("insights", json.dumps(row).encode()), now=second)
    assert len(board._arrivals) <= live.RATE_SECONDS + 1
    assert len(board._spent) <= live.COST_SECONDS + 1


def test_dashboard_websocket_pushes_its_own_events_and_unknown_ids_get_nothing(dashboard):
    feed = dashboard.feed
    feed.send("metrics", metric_record("api.latency_ms", "checkout", 120.0))
    feed.send("insights", insight("checkout", 1, "before anyone listened"))
    with connect(f"{dashboard.ws_url}/ws/dashboard/checkout") as checkout, \
            connect(f"{dashboard.ws_url}/ws/dashboard/no-such-dashboard") as unknown:
        first = _messages(checkout, 1)[0]  # what arrived before: the backlog
        assert first["type"] == "insight" and first["insight"] == "before anyone listened"
        feed.send("insights", insight("ingest", 2, "another dashboard's"))
        feed.send("alerts", alert(7, severity="critical"))  # on checkout's metric
        feed.send("insights", insight("checkout", 3, "live one"))
        pushed = _messages(checkout, 2)
        assert [(m["type"], m.get("severity") or m.get("insight")) for m in pushed] == [
            ("alert", "critical"), ("insight", "live one")]
        assert pushed[0]["dashboard_id"] is None and pushed[0]["summary"] == "alert number 7"
        assert _nothing_arrives(unknown)
        assert _nothing_arrives(checkout, 0.3)  # and not the other dashboard's insight


def test_a_malformed_message_is_counted_and_skipped(dashboard):
    dashboard.feed.send("alerts", b"\xff\xfe not json")
    dashboard.feed.send("alerts", {"alert_id": "x"})
    dashboard.feed.send("alerts", alert(3))
    with connect(f"{dashboard.ws_url}/ws/live") as page:
        seen = []
        while not any(m["type"] == "alert" for m in seen):
            seen.append(json.loads(page.recv(timeout=5)))
    stats = json.loads(urllib.request.urlopen(f"{dashboard.url}/stats", timeout=5).read())
    assert stats["malformed"] == 2 and stats["events"] == {"alert": 1}
    metrics = urllib.request.urlopen(f"{dashboard.url}/metrics", timeout=5).read().decode()
    assert 'realtime_ai_malformed_messages_total{stream="alerts"} 2.0' in metrics


def test_a_page_opened_later_starts_with_the_latest_100_alerts(dashboard):
    for n in range(130):
        dashboard.feed.send("alerts", alert(n))
    dashboard.feed.send("insights", insight("checkout", 5))
    dashboard.wait_for_events(131)
    with connect(f"{dashboard.ws_url}/ws/live") as page:
        backlog = []
        while not backlog or backlog[-1]["type"] != "stats":
            backlog.append(json.loads(page.recv(timeout=5)))
    alert_numbers = [int(m["summary"].split()[-1]) for m in backlog if m["type"] == "alert"]
    assert sorted(alert_numbers) == list(range(30, 130))
    assert [m["insight"] for m in backlog if m["type"] == "insight"] == ["latency is up"]
    assert backlog[-1]["events"] == {"alert": 130, "insight": 1}


def test_metrics_endpoint_exposes_model_figures(dashboard):
    dashboard.feed.send("insights", insight("checkout", 1))
    dashboard.feed.send("insights", insight("checkout", 2))
    with connect(f"{dashboard.ws_url}/ws/dashboard/checkout") as ws:
        _messages(ws, 2)
    text = urllib.request.urlopen(f"{dashboard.url}/metrics", timeout=5).read().decode()
    assert 'realtime_ai_model_calls_total{model="gpt-4o-mini"} 2.0' in text
    assert 'realtime_ai_model_tokens_total{direction="input",model="gpt-4o-mini"} 2000.0' in text
    assert "realtime_ai_model_latency_seconds_bucket{le=\"0.2\"} 2.0" in text
    assert "realtime_ai_model_cost_usd_total 0.00042" in text
    for name in ("realtime_ai_events_per_second", "realtime_ai_late_records",
                 "realtime_ai_dead_lettered_records"):
        assert name in text


def _write(folder, rows, schema):
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "part-0.parquet")


def _transaction_row(transaction_id, when):
    analysis = {"summary": "s", "fraud_pattern": "card_testing", "severity": "critical",
                "recommended_action": "Block the card.", "playbook_ids": []}
    return {"transaction_id": transaction_id, "customer_id": "c", "event_time": when,
            "amount": 2.0, "currency": "EUR", "merchant": "m", "merchant_category": "x",
            "country": "DE", "channel": "online", "amount_zscore": 0.0, "velocity_1h": 3,
            "new_country": False, "new_merchant_category": False, "risk_score": 0.97,
            "reason": "r", "escalated": True, "analysis": json.dumps(analysis),
            "model": "fast+deep", "llm_latency_ms": 300.0}


def test_replay_of_a_batch_run_is_in_event_time_order(tmp_path):
    t = lambda second: datetime(2026, 1, 5, 1, 0, second, tzinfo=timezone.utc)  # noqa: E731
    _write(tmp_path / "alerts", [{**alert(1, kind="transaction", subject="tx-1"),
                                  "event_time": t(30)}], ALERTS_SCHEMA)
    _write(tmp_path / "transactions", [_transaction_row("tx-1", t(30))], TRANSACTIONS_SCHEMA)
    _write(tmp_path / "metrics", [
        {"metric": "api.latency_ms", "event_time": t(s), "timestamp": "x", "value": 1.0,
         "z_score": 0.0,
         "anomaly_score": 0.0, "is_anomaly": s == 30, "dashboard_id": "d", "model": None,
         "llm_latency_ms": None,
         "analysis": json.dumps({"possible_causes": ["deploy"], "recommended_action": "roll "
                                 "back", "severity": "high", "is_real_anomaly": True})
         if s == 30 else None}
        for s in (40, 0, 30)], METRICS_SCHEMA)
    _write(tmp_path / "insights", [{**insight("d", 0), "window_start": t(0),
                                    "window_end": t(20)}], INSIGHTS_SCHEMA)
    events, dead, unreadable = load_outputs(str(tmp_path))
    assert [(e.kind, e.event_time.second) for e in events] == [
        ("metric", 0), ("insight", 20), ("transaction", 30), ("metric", 30), ("alert", 30),
        ("metric", 40)]
    assert dead == [] and unreadable == 0
    # the alert carries the deep model's analysis of the transaction it was raised for
    assert events[4].data["explanation"] == "pattern: card testing. Block the card."
    assert events[3].data["explanation"] == "possible causes: deploy. roll back"

    published, waits = [], []

    class Hub:
        publish = published.append

        def dead_letter(self, row):
            raise AssertionError("none written")

    async def sleep(seconds):
        waits.append(seconds)

    asyncio.run(ReplayFeed(str(tmp_path), speed=10.0, sleep=sleep).run(Hub()))
    assert [e.kind for e in published] == [e.kind for e in events]
    # due 2, 3, 3, 3 and 4 s after the start: 40 s of event time at 10x (the fake sleep
    # takes no time)
    assert waits == pytest.approx([2.0, 3.0, 3.0, 3.0, 4.0], abs=0.2)


def test_the_command_without_a_source_says_what_to_give():
    done = subprocess.run([sys.executable, "-m", "realtime_ai.dashboard"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: give --alerts_subscription")
    assert "Traceback" not in done.stderr


def test_the_dashboard_is_an_app_not_beam():
    imports = ("import sys, realtime_ai.dashboard.__main__, realtime_ai.dashboard.app, "
               "realtime_ai.dashboard.feeds; print('apache_beam' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", imports], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("argv, message", [
    (["--alerts_subscription=my-sub"], "not a subscription path"),
    (["--output=/no/such/dir"], "no such folder"),
    (["--output=.", "--alerts_subscription=projects/p/subscriptions/s"], "not both"),
    (["--output=."], "holds none of"),
    (["--output={outputs}", "--speed=-1"], "--speed must be 0 or more"),
])
def test_bad_arguments_get_one_line_and_exit_2(argv, message, tmp_path, capsys):
    (tmp_path / "alerts").mkdir()
    assert cli.main([arg.format(outputs=tmp_path) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_port_in_use_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "alerts").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main([f"--output={tmp_path}", f"--port={port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "--port" in err
