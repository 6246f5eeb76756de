"""One asyncio event loop per worker process, shared by every DoFn instance in it.

DoFns submit coroutines from their (synchronous) bundle threads and collect results as they
complete; model clients live on this loop, so their connection pools are shared too.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any

from realtime_ai.llm.base import LlmBackend, LlmConfig

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None
_backends: dict[LlmConfig, LlmBackend] = {}


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (and again after a fork)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid():
            _loop = asyncio.new_event_loop()
            _loop_pid = os.getpid()
            _backends.clear()
            threading.Thread(target=_loop.run_forever, name="realtime-ai-llm-loop",
                             daemon=True).start()
        return _loop


def submit(coro: Coroutine) -> concurrent.futures.Future:
    return asyncio.run_coroutine_threadsafe(coro, event_loop())


def shared_backend(config: LlmConfig) -> LlmBackend:
    """One backend (and so one connection pool) per configuration per process."""
    from realtime_ai.llm.client import make_backend  # client imports openai: load it lazily

    event_loop()
    with _lock:
        if config not in _backends:
            _backends[config] = make_backend(config)
        return _backends[config]


class InFlight:
    """At most `limit` coroutines running for one caller; results collected in any order."""

    def __init__(self, limit: int):
        self._limit = limit
        self._running: dict[concurrent.futures.Future, Any] = {}

    def add(self, key: Any, coro: Coroutine) -> None:
        """Start `coro`; blocks while `limit` are still running (finished ones don't count)."""
        while len(busy := [f for f in self._running if not f.done()]) >= self._limit:
            concurrent.futures.wait(busy, return_when=concurrent.futures.FIRST_COMPLETED)
        self._running[submit(coro)] = key

    def drain_completed(self) -> list[tuple[Any, Any]]:
        """(key, result or exception) for everything finished so far; never blocks."""
        return self._collect([f for f in self._running if f.done()])

    def drain_all(self) -> list[tuple[Any, Any]]:
        """(key, result or exception) for everything, waiting for what is still running."""
        concurrent.futures.wait(self._running)
        return self._collect(list(self._running))

    def _collect(self, finished: list[concurrent.futures.Future]) -> list[tuple[Any, Any]]:
        outcomes = []
        for future in finished:
            key = self._running.pop(future)
            error = future.exception()
            outcomes.append((key, error if error is not None else future.result()))
        return outcomes
