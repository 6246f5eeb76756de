"""One asyncio event loop per worker process, shared by every DoFn instance in it.

DoFns submit coroutines from their (synchronous) bundle threads and collect results as they
complete; model clients live on this loop, so their connection pools are shared too.
"""
from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import gc
import logging
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any

from realtime_ai.llm.base import FAST, LlmBackend, LlmConfig

CLOSE_TIMEOUT_SECONDS = 5.0
FREEZE_INTERVAL_SECONDS = 300.0
# Requests a worker holds per request slot of the endpoint: one in flight and one waiting on
# the event loop, which sends it the moment an answer frees the slot. With one per slot the
# bundle thread refilled each freed slot itself, one element at a time between its other
# work, and an endpoint's answers come in bursts: at 64 in flight and 200 ms a call, the
# main command kept 50 requests in flight at the server on average, 62 with two.
REQUESTS_HELD_PER_SLOT = 2
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_backends: dict[LlmConfig, LlmBackend] = {}
_slots: dict[tuple[LlmConfig, str], threading.Semaphore] = {}
_frozen_at: float | None = None  # time.monotonic() of the last freeze


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (and again after a fork)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
            _backends.clear()
            _slots.clear()
            threading.Thread(target=_loop.run_forever, name="realtime-ai-llm-loop",
                             daemon=True).start()
        return _loop


async def _close_all(backends: list[LlmBackend]) -> None:
    # a client that fails to close says so in the log, not in a traceback at exit
    for outcome in await asyncio.gather(*(backend.aclose() for backend in backends),
                                        return_exceptions=True):
        if isinstance(outcome, Exception):
            logging.warning("a model client did not close cleanly: %s", outcome)


def _close_backends() -> None:
    """At exit: backends' connection pools close their connections instead of warning about
    unclosed sessions."""
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or not _backends:
            return
        backends = list(_backends.values())
        _backends.clear()
    closing = asyncio.run_coroutine_threadsafe(_close_all(backends), _loop)
    try:
        closing.result(CLOSE_TIMEOUT_SECONDS)
    except concurrent.futures.TimeoutError:
        logging.warning("model clients still closing after %s s; exiting", CLOSE_TIMEOUT_SECONDS)


atexit.register(_close_backends)


def freeze_long_lived_objects() -> None:
    """Moves what the process holds now out of the cyclic collector's sight, at most once
    every FREEZE_INTERVAL_SECONDS.

    A worker's heap is mostly long-lived (Beam, the SDK harness, the pipeline); every full
    collection scans it, a pause of ~70 ms for every request in flight on the event loop
    (benchmarks/llm_throughput.py: 0.91-0.95 of the concurrency bound without, falling with
    each pipeline a process had run; 0.94-0.96 with). Collected first, so no garbage is kept;
    frozen objects freed later by reference counting are still freed. Not on every call:
    the DirectRunner sets DoFns up per bundle.
    """
    global _frozen_at
    with _lock:
        now = time.monotonic()
        if _frozen_at is not None and now - _frozen_at < FREEZE_INTERVAL_SECONDS:
            return
        _frozen_at = now
    gc.collect()
    gc.freeze()


def submit(coro: Coroutine) -> concurrent.futures.Future:
    return asyncio.run_coroutine_threadsafe(coro, event_loop())


def shared_backend(config: LlmConfig) -> LlmBackend:
    """One backend (and so one connection pool) per configuration per process."""
    # the client's modules (aiohttp and the rest): loaded only where a backend is made
    from realtime_ai.llm.client import make_backend

    event_loop()
    with _lock:
        if config not in _backends:
            _backends[config] = make_backend(config)
        return _backends[config]


def shared_slots(config: LlmConfig, tier: str) -> threading.Semaphore:
    """Element slots of one model tier, shared by every DoFn instance in the process that asks
    it, so the limit holds per worker however many bundle threads the runner uses:
    REQUESTS_HELD_PER_SLOT times `config.concurrency` requests, each carrying up to
    `fast_batch_size` packed elements on the fast tier (the backend itself keeps at most
    `concurrency` requests of a model in flight; the rest wait on the event loop for a
    request slot). A tier's own, as its request slots are: elements waiting on a slow deep
    model never hold the fast tier's."""
    event_loop()
    packed = config.fast_batch_size if tier == FAST else 1
    with _lock:
        return _slots.setdefault((config, tier), threading.Semaphore(
            REQUESTS_HELD_PER_SLOT * config.concurrency * packed))


class InFlight:
    """Coroutines running for one caller, at most as many as `slots` allows (slots may be
    shared with other callers); results collected in any order.

    A finished coroutine frees its slot and queues its outcome from a done-callback, so
    adding and collecting are O(1) and never poll.
    """

    def __init__(self, slots: threading.Semaphore):
        self._slots = slots
        self._finished: collections.deque[tuple[Any, Any]] = collections.deque()
        self._pending = 0
        self._all_done = threading.Condition()

    def add(self, key: Any, coro: Coroutine) -> None:
        """Start `coro`; blocks while every slot is taken."""
        self._slots.acquire()
        with self._all_done:
            self._pending += 1
        submit(coro).add_done_callback(lambda future: self._on_done(key, future))

    def _on_done(self, key: Any, future: concurrent.futures.Future) -> None:
        error = future.exception()
        self._finished.append((key, error if error is not None else future.result()))
        self._slots.release()
        with self._all_done:
            self._pending -= 1
            self._all_done.notify_all()

    def drain_completed(self) -> list[tuple[Any, Any]]:
        """(key, result or exception) for everything finished so far; never blocks."""
        outcomes = []
        while self._finished:
            outcomes.append(self._finished.popleft())
        return outcomes

    def drain_all(self) -> list[tuple[Any, Any]]:
        """(key, result or exception) for everything, waiting for what is still running."""
        with self._all_done:
            self._all_done.wait_for(lambda: self._pending == 0)
        return self.drain_completed()
