"""The dashboard served by a real uvicorn on a free loopback port, fed by the test."""
import asyncio
import json
import queue
import socket
import threading
import time

import uvicorn

from realtime_ai.core.live import LiveBoard
from realtime_ai.dashboard.app import Hub, create_app
from realtime_ai.dashboard.ask import QuestionAnswerer
from realtime_ai.llm.accounting import load_prices
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.retrieval import load_playbook

T = "2026-01-05T01:16:50Z"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class QueueFeed:
    """Messages put by the test, received by the hub as if from a subscription."""

    def __init__(self):
        self.messages: queue.Queue = queue.Queue()

    def send(self, stream: str, body) -> None:
        self.messages.put((stream, body if isinstance(body, bytes) else json.dumps(body).encode()))

    async def run(self, hub) -> None:
        while True:  # polled on the server's loop: no thread for its shutdown to wait on
            try:
                stream, data = self.messages.get_nowait()
            except queue.Empty:
                await asyncio.sleep(0.01)
                continue
            hub.receive(stream, data)


class RunningDashboard:
    def __init__(self, feeds, config: LlmConfig):
        self.port = free_port()
        self.hub = Hub(LiveBoard(load_prices()))
        app = create_app(self.hub, feeds, QuestionAnswerer(config, load_playbook()))
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                     log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            assert time.monotonic() < deadline, "the dashboard did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def wait_for_events(self, count: int, seconds: float = 10.0) -> None:
        """Until the hub has received `count` events (feeds deliver asynchronously)."""
        deadline = time.monotonic() + seconds
        while sum(self.hub.board.counts.values()) < count:
            assert time.monotonic() < deadline, self.hub.board.counts
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def alert(n: int, severity: str = "high", subject: str = "api.latency_ms", kind: str = "metric"):
    return {"alert_id": f"met-{n:024d}", "kind": kind, "subject": subject,
            "severity": severity, "event_time": f"2026-01-05T01:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "summary": f"alert number {n}"}


def insight(dashboard_id: str, minute: int, text: str = "latency is up", priority="high"):
    return {"dashboard_id": dashboard_id, "window_start": f"2026-01-05T01:{minute:02d}:00Z",
            "window_end": f"2026-01-05T01:{minute:02d}:30Z", "insight": text,
            "priority": priority, "metric_count": 3, "model": "gpt-4o-mini",
            "llm_latency_ms": 120.0, "input_tokens": 1000, "output_tokens": 100}


def metric_record(metric: str, dashboard_id: str, value: float, when: str = T):
    return {"metric": metric, "value": value, "timestamp": when,
            "metadata": {"dashboard_id": dashboard_id}}
