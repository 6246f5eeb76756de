"""Answers remembered by event, for good: a re-run or a replay pays only for what is new. No Beam.

The response cache (cache.py) pays once per identical request within its TTL; the memo pays
once per event. `MemoBackend` keys each answer by (task, prompt version, model, event id),
where the event id is read from the task's data (a transaction's id and time, a metric value's
metric, time and value, a dashboard window), and keeps it until someone deletes it: re-running
a range or replaying a stream days later asks the model only for events it never answered,
and writes the same rows (the remembered answer, with its model, latency and prompt version).
A new prompt (tasks.PROMPT_VERSIONS) or another model is a new key: nothing stale is reused.

Only answers a model gave to a prompt are remembered, and only under the model that gave them:
failures never are, nor the local rules model's (it is free, and a degraded answer must not
outlive the outage), nor a fast answer standing in for the deep model's (routing.py: keyed by
the deep model, it would be replayed for good in place of the deep model's own answer). A memo
that cannot be read or written only costs money: the error is logged and the model is asked.

Where (`--memo`):
- `redis://HOST:PORT/N`: one key per answer, no expiry.
- a folder, local or `gs://`: one small JSON file per answer,
  `FOLDER/TASK/PROMPT_VERSION/KK/KEY.json`. Workers never coordinate: each file is written
  whole and in one step (a local file under a temporary name, then renamed; a GCS object
  appears only when its upload completes), so a reader sees a whole answer or none, and two
  workers answering the same event write equivalent files, the last one staying. Nothing is
  appended to or rewritten in place, there is no index to load or compact, and a lookup is
  one read of a known name: memory stays flat however long the memo grows, at the price of one
  small object per answered event (on GCS about $5 per million writes, far below the calls
  it saves).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from realtime_ai.llm import base, tasks
from realtime_ai.llm.base import LlmBackend, LlmConfig, LlmResult

LOG = logging.getLogger(__name__)
REDIS_KEY_PREFIX = "realtime-ai:memo:"
REDIS_SCHEMES = ("redis://", "rediss://")
WARN_EVERY_SECONDS = 60.0
# Lookups run beside the event loop; a GCS read takes tens of ms, so as many as requests.
MAX_IO_THREADS = 64


def event_id(task: str, data: Mapping[str, Any]) -> str:
    """The event a task's data is about: the same for a re-run or a replay of that event."""
    if task in (base.TRANSACTION_RISK, base.TRANSACTION_ANALYSIS):
        tx = data["transaction"]
        return f"{tx['transaction_id']}|{tx['timestamp']}"
    if task == base.METRIC_ANOMALY:
        return f"{data['metric']}|{data['timestamp']}|{data['value']!r}"
    if task == base.DASHBOARD_INSIGHT:
        return f"{data['dashboard_id']}|{data['window_start']}|{data['window_end']}"
    raise ValueError(f"no event id for task {task!r}")


def memo_key(task: str, model: str, data: Mapping[str, Any]) -> str:
    canonical = json.dumps([task, tasks.PROMPT_VERSIONS[task], model, event_id(task, data)],
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _encode(result: LlmResult) -> bytes:
    # what the answer cost stays with the run that paid for it
    return json.dumps({**dataclasses.asdict(result), "spent": []}, sort_keys=True).encode()


def _decode(value: bytes) -> LlmResult:
    return LlmResult(**{**json.loads(value), "spent": ()})


class Memo(Protocol):
    async def get(self, task: str, key: str) -> bytes | None: ...

    async def put(self, task: str, key: str, value: bytes) -> None: ...

    async def aclose(self) -> None: ...


class RedisMemo:
    def __init__(self, url: str):
        import redis.asyncio  # only when a Redis memo is configured

        self._redis = redis.asyncio.from_url(url)

    async def get(self, task: str, key: str) -> bytes | None:
        return await self._redis.get(REDIS_KEY_PREFIX + key)

    async def put(self, task: str, key: str, value: bytes) -> None:
        await self._redis.set(REDIS_KEY_PREFIX + key, value)

    async def aclose(self) -> None:
        await self._redis.aclose()


class DirectoryMemo:
    """One file per answer under a local or gs:// folder (see the module's docstring)."""

    def __init__(self, location: str, threads: int):
        import pyarrow.fs  # the filesystems of pyarrow, which our Parquet already needs

        if location.startswith("gs://"):
            self._fs, self._root = pyarrow.fs.FileSystem.from_uri(location)
            self._local = False
        else:
            self._fs, self._root = pyarrow.fs.LocalFileSystem(), os.path.abspath(location)
            self._local = True
        self._io = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="realtime-ai-memo")

    def _path(self, task: str, key: str) -> str:
        return f"{self._root}/{task}/{tasks.PROMPT_VERSIONS[task]}/{key[:2]}/{key}.json"

    async def _run(self, function, *args):
        return await asyncio.get_running_loop().run_in_executor(self._io, function, *args)

    async def get(self, task: str, key: str) -> bytes | None:
        return await self._run(self._read, self._path(task, key))

    def _read(self, path: str) -> bytes | None:
        try:
            with self._fs.open_input_stream(path) as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    async def put(self, task: str, key: str, value: bytes) -> None:
        await self._run(self._write, self._path(task, key), value)

    def _write(self, path: str, value: bytes) -> None:
        if not self._local:  # an object appears only once its upload is complete
            with self._fs.open_output_stream(path) as handle:
                handle.write(value)
            return
        folder, name = path.rsplit("/", 1)
        self._fs.create_dir(folder, recursive=True)
        # a name of this writer's own, then one rename: no reader sees half a file
        staging = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with self._fs.open_output_stream(staging) as handle:
            handle.write(value)
        self._fs.move(staging, path)

    async def aclose(self) -> None:
        self._io.shutdown(wait=False)


def check_location(location: str) -> None:
    """ValueError saying what is wrong with a --memo value, if anything."""
    if location.startswith(REDIS_SCHEMES):
        return
    if "://" in location and not location.startswith("gs://"):
        raise ValueError(f"--memo must be redis://HOST:PORT/N or a folder (local or gs://), "
                         f"got {location}")
    if "://" not in location and os.path.exists(location) and not os.path.isdir(location):
        raise ValueError(f"--memo={location} is a file, not a folder")


def open_memo(location: str, threads: int) -> Memo:
    if location.startswith(REDIS_SCHEMES):
        return RedisMemo(location)
    return DirectoryMemo(location, min(threads, MAX_IO_THREADS))


class MemoBackend:
    """Wraps a backend: an event answered before, by the same model to the same prompt, is
    answered from the memo (no call, no cost); a new answer is remembered."""

    def __init__(self, inner: LlmBackend, config: LlmConfig):
        self._inner = inner
        self._model = config.model  # the model a tier asks: part of an answer's key
        self._memo = open_memo(config.memo, config.concurrency)
        self._warned_at: float | None = None

    def _warn(self, what: str, error: Exception) -> None:
        # once a minute: a memo that is down would otherwise log once per event
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            LOG.warning("answer memo unavailable, %s: %s", what, error)

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        key = memo_key(task, self._model(tier), data)
        try:
            remembered = await self._memo.get(task, key)
        except Exception as error:  # noqa: BLE001 - any store failure: ask the model
            self._warn("asking the model", error)
            remembered = None
        if remembered is not None:
            try:
                return dataclasses.replace(_decode(remembered), cached=True, remembered=True)
            except (ValueError, TypeError) as error:  # a damaged entry: answered again
                self._warn("a remembered answer is unreadable", error)
        result = await self._inner.complete(task, data, tier)
        if result.prompt_version is not None and not result.stands_in:
            try:
                await self._memo.put(task, key, _encode(
                    dataclasses.replace(result, cached=False, remembered=False)))
            except Exception as error:  # noqa: BLE001 - not remembered: only costs money
                self._warn("answer not remembered", error)
        return result

    async def aclose(self) -> None:
        await self._memo.aclose()
        await self._inner.aclose()
