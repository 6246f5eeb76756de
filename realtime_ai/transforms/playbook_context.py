"""The playbook a worker retrieves context from: --context, or the one in the package.

It is re-read every `refresh_seconds` by each worker, not sent as a slowly changing side
input: on the DirectRunner a global-window side input blocks the main input until the side
input's watermark reaches the end of time, i.e. forever in streaming; a re-read on the worker
behaves the same on every runner.
"""
from __future__ import annotations

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
