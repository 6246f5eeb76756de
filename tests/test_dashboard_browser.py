"""The dashboard in a real browser: alerts published through the Pub/Sub emulator show on the
page within 5 s, a malformed message is skipped, and the page reconnects to a restarted
server. Headless Chromium from scripts/chromium.sh, driven over DevTools (tests/browser.py)."""
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from realtime_ai.io.pubsub import ALERT_ATTRIBUTES, pubsub_message
from tests.browser import Browser
from tests.conftest import UNAVAILABLE
from tests.dashboard_helpers import free_port
from tests.pubsub_helpers import topic_with_subscription

pytestmark = pytest.mark.integration
REPO = pathlib.Path(__file__).resolve().parents[1]
SHOWN_WITHIN_SECONDS = 5.0
SUMMARIES = "[...document.querySelectorAll('#alerts .summary')].map(e => e.textContent)"


@pytest.fixture(scope="session")
def chromium() -> str:
    found = subprocess.run(["bash", "scripts/chromium.sh", "path"], cwd=REPO,
                           capture_output=True, text=True, timeout=900)
    if found.returncode == UNAVAILABLE:
        pytest.skip(found.stderr)
    assert found.returncode == 0, found.stderr
    return found.stdout.strip()


class _Dashboard:
    """`python -m realtime_ai.dashboard` as a user starts it, on the emulator."""

    def __init__(self, port: int, subscription: str):
        self.url = f"http://127.0.0.1:{port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "realtime_ai.dashboard", f"--port={port}",
             f"--alerts_subscription={subscription}"],
            cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True)
        deadline = time.monotonic() + 60
        while not self._answers():
            assert self._process.poll() is None, self._process.stderr.read()
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/stats", timeout=1).close()
            return True
        except OSError:
            return False

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return json.load(response)

    def stop(self) -> str:
        self._process.terminate()
        self._process.wait(timeout=20)
        return self._process.stderr.read()


def _alert(n: int, severity: str) -> dict:
    return {"alert_id": f"tra-browser-{n}", "kind": "transaction", "subject": f"tx-{n}",
            "severity": severity, "summary": f"browser test alert {n}",
            "event_time": datetime(2026, 1, 5, tzinfo=timezone.utc) + timedelta(minutes=n)}


def test_page_shows_alerts_from_the_emulator_and_reconnects(emulator, chromium):
    from google.cloud import pubsub_v1

    topic, _, subscription = topic_with_subscription("dashboard-alerts")
    publisher = pubsub_v1.PublisherClient()

    def publish(body: bytes, **attributes) -> None:
        publisher.publish(topic, body, **attributes).result(timeout=10)

    def publish_alert(n: int, severity: str) -> None:
        body, attributes = pubsub_message(_alert(n, severity), ALERT_ATTRIBUTES)
        publish(body, **attributes)

    port = free_port()
    dashboard = _Dashboard(port, subscription)
    browser = Browser(chromium, dashboard.url + "/")
    try:
        assert browser.wait_for("document.getElementById('status').textContent === 'live'", 20)
        published_at = time.monotonic()
        for n, severity in ((1, "high"), (2, "critical"), (3, "high")):
            publish_alert(n, severity)
        publish(b"{not an alert")  # counted and skipped
        shown = browser.wait_for(f"{SUMMARIES}.length === 3 && {SUMMARIES}",
                                 SHOWN_WITHIN_SECONDS)
        elapsed = time.monotonic() - published_at
        assert shown == ["browser test alert 3", "browser test alert 2",
                         "browser test alert 1"], f"page shows {shown} after {elapsed:.1f} s"
        assert browser.evaluate("document.querySelector('#alerts .sev-critical .tag')"
                                ".textContent") == "critical"
        deadline = time.monotonic() + 5
        while dashboard.stats()["malformed"] != 1:
            assert time.monotonic() < deadline, dashboard.stats()
            time.sleep(0.1)

        # The server restarts: the page says so, reconnects, and shows what comes next.
        assert "Traceback" not in dashboard.stop()
        assert browser.wait_for("document.getElementById('status').textContent "
                                "=== 'reconnecting'", 10)
        dashboard = _Dashboard(port, subscription)
        publish_alert(4, "critical")
        assert browser.wait_for(f"{SUMMARIES}.includes('browser test alert 4')", 15), \
            browser.evaluate(SUMMARIES)
    finally:
        browser.close()
        dashboard.stop()
        publisher.stop()
