"""The context a worker retrieves from: the playbook (--context, or the one in the package)
and an earlier run's alerts (--past_alerts).

The playbook is re-read every `refresh_seconds` by each worker, not sent as a slowly
changing side input: on the DirectRunner a global-window side input blocks the main input
until the side input's watermark reaches the end of time, i.e. forever in streaming; a
re-read on the worker behaves the same on every runner. Past alerts are read once per worker
process, for the same reason, and not fed back from this run's own alerts: that would be a
cycle in the pipeline, and would make a batch run's context depend on the order of its
events.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from apache_beam.io.filesystems import FileSystems

from realtime_ai.llm import retrieval


def _read_text(path: str) -> str:
    with FileSystems.open(path) as handle:
        return handle.read().decode("utf-8")


class WorkerPlaybook:
    """Picklable; the refreshing playbook itself is made on the worker (a clock does not
    travel pickled)."""

    def __init__(self, path: str | None, refresh_seconds: float):
        self._path = path
        self._refresh_seconds = refresh_seconds
        self._playbook: retrieval.RefreshingPlaybook | None = None

    def _read(self) -> str | None:
        return _read_text(self._path) if self._path else None

    def current(self) -> retrieval.Playbook:
        if self._playbook is None:
            self._playbook = retrieval.RefreshingPlaybook(self._read, self._refresh_seconds)
        return self._playbook.current()


_past_alerts_lock = threading.Lock()
_past_alerts: dict[str, retrieval.PastAlerts] = {}


class WorkerPastAlerts:
    """Picklable; the alerts under `path` are read by `read_rows(path)` once per worker
    process, on first use (the DirectRunner makes DoFns anew for every bundle)."""

    def __init__(self, path: str, read_rows: Callable[[str], Iterable[Mapping]]):
        self._path = path
        self._read_rows = read_rows

    def current(self) -> retrieval.PastAlerts:
        with _past_alerts_lock:
            if self._path not in _past_alerts:
                _past_alerts[self._path] = retrieval.PastAlerts(self._read_rows(self._path))
            return _past_alerts[self._path]
