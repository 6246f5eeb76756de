"""The dashboard's web app: the page, its websockets, /ask and /metrics (FastAPI)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from realtime_ai.core.live import (
    ALERT,
    INSIGHT,
    LiveBoard,
    LiveEvent,
    MalformedMessage,
    event_from_message,
)
from realtime_ai.dashboard.ask import MAX_QUESTION_CHARS, QuestionAnswerer
from realtime_ai.llm.accounting import LATENCY_BUCKETS_MS

LOG = logging.getLogger(__name__)
STATS_SECONDS = 1.0  # how often a page gets the figures
LISTENER_QUEUE = 10_000  # messages a slow websocket may lag behind before it is closed


class Hub:
    """Receives events from the feeds, keeps them on the board, hands them to listeners.

    Runs on the server's event loop only (feeds hop onto it)."""

    def __init__(self, board: LiveBoard, clock: Callable[[], float] = time.time):
        self.board = board
        self._clock = clock
        self._listeners: dict[asyncio.Queue, Callable[[LiveEvent], bool]] = {}
        self.metrics = _PrometheusMetrics(board)

    def receive(self, stream: str, data: bytes) -> None:
        """One Pub/Sub message: published, or counted and skipped when malformed."""
        try:
            event = event_from_message(stream, data)
        except MalformedMessage as error:
            self.malformed(stream, str(error))
            return
        self.publish(event)

    def malformed(self, stream: str, error: str) -> None:
        self.board.malformed[stream] += 1
        self.metrics.malformed.labels(stream).inc()
        LOG.warning("skipped a malformed message on %s: %s", stream, error)

    def dead_letter(self, row: dict) -> None:
        self.board.add_dead_letter(row)

    def publish(self, event: LiveEvent) -> None:
        if not self.board.add(event, self._clock()):
            return  # a redelivery
        self.metrics.observe(event)
        message = event.message()
        for queue, wants in list(self._listeners.items()):
            if not wants(event):
                continue
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:  # a client that stopped reading: it reconnects later
                del self._listeners[queue]

    def listen(self, wants: Callable[[LiveEvent], bool]) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(LISTENER_QUEUE)
        self._listeners[queue] = wants
        return queue

    def stop_listening(self, queue: asyncio.Queue) -> None:
        self._listeners.pop(queue, None)

    def is_listening(self, queue: asyncio.Queue) -> bool:
        return queue in self._listeners

    def stats(self) -> dict:
        stats = self.board.stats(self._clock())
        self.metrics.events_per_second.set(stats["events_per_second"])
        return stats


class _PrometheusMetrics:
    """What /metrics exposes, from what the dashboard received."""

    def __init__(self, board: LiveBoard):
        self._board = board
        self.registry = CollectorRegistry()
        registry = self.registry
        self.events = Counter("realtime_ai_events", "Pipeline outputs received, by kind",
                              ["kind"], registry=registry)
        self.events_per_second = Gauge("realtime_ai_events_per_second",
                                       "Outputs received per second (last 10 s)",
                                       registry=registry)
        self.malformed = Counter("realtime_ai_malformed_messages",
                                 "Messages skipped as not outputs of the pipeline",
                                 ["stream"], registry=registry)
        Gauge("realtime_ai_late_records", "Records dead-lettered as too late",
              registry=registry).set_function(lambda: board.late)
        Gauge("realtime_ai_dead_lettered_records", "Other dead-lettered records",
              registry=registry).set_function(lambda: board.dead_lettered)
        self.calls = Counter("realtime_ai_model_calls", "Model calls behind received outputs",
                             ["model"], registry=registry)
        self.tokens = Counter("realtime_ai_model_tokens", "Tokens of those calls, when reported",
                              ["model", "direction"], registry=registry)
        self.cost = Counter("realtime_ai_model_cost_usd",
                            "Estimated cost of those calls (priced models, tokens reported)",
                            registry=registry)
        self.latency = Histogram("realtime_ai_model_latency_seconds",
                                 "Model latency of received outputs",
                                 buckets=[b / 1000.0 for b in LATENCY_BUCKETS_MS],
                                 registry=registry)

    def observe(self, event: LiveEvent) -> None:
        self.events.labels(event.kind).inc()
        for call in event.calls:
            self.calls.labels(call.model).inc()
            if call.latency_ms:
                self.latency.observe(call.latency_ms / 1000.0)
            if call.input_tokens is not None:
                self.tokens.labels(call.model, "input").inc(call.input_tokens)
                self.tokens.labels(call.model, "output").inc(call.output_tokens)
            cost = self._board.call_cost_usd(call)
            if cost:
                self.cost.inc(cost)


def _page() -> str:
    return resources.files("realtime_ai.dashboard").joinpath("static/index.html").read_text()


def create_app(hub: Hub, feeds: list, answerer: QuestionAnswerer) -> FastAPI:
    """The app; the feeds run while it serves."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        running = [asyncio.create_task(feed.run(hub), name=type(feed).__name__)
                   for feed in feeds]
        for task in running:
            task.add_done_callback(_log_failure)
        try:
            yield
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await answerer.aclose()

    app = FastAPI(title="realtime-ai dashboard", lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return _page()

    @app.websocket("/ws/live")
    async def live(websocket: WebSocket) -> None:
        """Everything, for the page: the backlog, then events and the figures every second."""
        await _serve(websocket, hub, hub.board.page_backlog, lambda event: True,
                     with_stats=True)

    @app.websocket("/ws/dashboard/{dashboard_id}")
    async def dashboard(websocket: WebSocket, dashboard_id: str) -> None:
        """One dashboard's insights, alerts and anomalies, as they arrive (recent ones first).
        An id nobody sends gets an open, empty stream."""
        def wants(event: LiveEvent) -> bool:
            return (event.kind in (ALERT, INSIGHT) or event.is_anomaly) and \
                hub.board.dashboard_of(event) == dashboard_id

        await _serve(websocket, hub, lambda: hub.board.dashboard_backlog(dashboard_id), wants,
                     with_stats=False)

    @app.get("/ask")
    async def ask(q: str = "") -> Response:
        """Server-sent events: the answer's tokens, then {"done": true, "cached": ...}."""
        question = q.strip()
        if not question or len(question) > MAX_QUESTION_CHARS:
            return JSONResponse({"error": f"ask a question of 1 to {MAX_QUESTION_CHARS} "
                                          "characters: /ask?q=..."}, status_code=400)

        async def events():
            async for body in answerer.answer(question, hub.board.question_data()):
                yield f"data: {json.dumps(body)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/metrics")
    async def metrics() -> Response:
        hub.stats()  # refreshes the rate gauge
        return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def stats() -> dict:
        return hub.stats()

    return app


async def _serve(websocket: WebSocket, hub: Hub, backlog: Callable[[], list[LiveEvent]],
                 wants: Callable[[LiveEvent], bool], with_stats: bool) -> None:
    # Listening and taking the backlog with no await between: nothing falls in between.
    queue = hub.listen(wants)
    recent = backlog()
    closed = None
    try:
        await websocket.accept()
        for event in recent:
            await websocket.send_json(event.message())
        if with_stats:
            await websocket.send_json(hub.stats())
        # A client that goes away is noticed at once, even by a stream that sends nothing.
        closed = asyncio.create_task(_until_closed(websocket))
        clock = asyncio.get_running_loop().time
        stats_due = clock() + STATS_SECONDS
        while hub.is_listening(queue) and not closed.done():
            message = asyncio.ensure_future(queue.get())
            await asyncio.wait({message, closed}, timeout=max(0.0, stats_due - clock()),
                               return_when=asyncio.FIRST_COMPLETED)
            if message.done():
                await websocket.send_json(message.result())
            else:
                message.cancel()
            if clock() >= stats_due and not closed.done():
                stats_due = clock() + STATS_SECONDS
                if with_stats:  # every second, however busy the stream is
                    await websocket.send_json(hub.stats())
        if not closed.done():
            await websocket.close(code=1013)  # fell too far behind: "try again later"
    except WebSocketDisconnect:
        pass
    finally:
        hub.stop_listening(queue)
        if closed is not None:
            closed.cancel()


async def _until_closed(websocket: WebSocket) -> None:
    """Returns when the client disconnects; what it sends is ignored."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        LOG.error("feed %s stopped: %r", task.get_name(), task.exception())
