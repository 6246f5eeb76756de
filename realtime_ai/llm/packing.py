"""Request packing: several fast-tier risk requests in one model call.

Requests that arrive within `batch_wait_ms` of each other (up to `fast_batch_size`) share one
instruction and one call; the answer must hold one schema-valid result per transaction_id.
A transaction whose result is missing or invalid is asked again alone, and so is every
transaction of a packed call that failed for good: packing never loses or guesses an answer.
"""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from realtime_ai.llm import base, tasks
from realtime_ai.llm.base import LlmBackend, LlmConfig, LlmPermanentError, LlmResult

_RESULT_SCHEMA = tasks.SCHEMAS[base.TRANSACTION_RISK]


def split_packed(answer: Mapping[str, Any], ids: list[str]) -> dict[str, dict]:
    """Valid results by transaction id; ids answered twice, unknown or invalid are dropped."""
    results: dict[str, dict] = {}
    duplicated = set()
    for item in answer["results"]:
        tx_id = item["transaction_id"]
        result = {k: v for k, v in item.items() if k != "transaction_id"}
        if tx_id in results:
            duplicated.add(tx_id)
        elif tx_id in ids and not tasks.schema_problems(result, _RESULT_SCHEMA):
            results[tx_id] = result
    return {tx_id: r for tx_id, r in results.items() if tx_id not in duplicated}


class PackingBackend:
    """Wraps a backend: transaction_risk requests are packed; other tasks pass through."""

    def __init__(self, inner: LlmBackend, config: LlmConfig):
        self._inner = inner
        self._size = config.fast_batch_size
        self._wait = config.batch_wait_ms / 1000.0
        self._queue: list[tuple[Mapping[str, Any], asyncio.Future]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self.packed_calls = 0
        self.unpacked_retries = 0

    async def complete(self, task: str, data: Mapping[str, Any], tier: str) -> LlmResult:
        if task != base.TRANSACTION_RISK or tier != base.FAST:
            return await self._inner.complete(task, data, tier)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((data, future))
        if len(self._queue) >= self._size:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self._wait, self._flush)
        return await future

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._queue = self._queue, []
        if batch:
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[Mapping[str, Any], asyncio.Future]]) -> None:
        ids = [data["transaction"]["transaction_id"] for data, _ in batch]
        results: dict[str, dict] = {}
        packed: LlmResult | None = None
        if len(set(ids)) == len(ids) and len(batch) > 1:
            self.packed_calls += 1
            try:
                packed = await self._inner.complete(
                    base.TRANSACTION_RISK_PACKED,
                    {"transactions": [data for data, _ in batch]}, base.FAST)
                results = split_packed(packed.answer, ids)
            except LlmPermanentError:
                results = {}  # every member is asked alone below
        for (data, future), tx_id in zip(batch, ids, strict=True):
            if tx_id in results:
                future.set_result(LlmResult(
                    answer=results[tx_id], model=packed.model, latency_ms=packed.latency_ms,
                    input_tokens=packed.input_tokens // len(batch),
                    output_tokens=packed.output_tokens // len(batch), attempts=packed.attempts,
                    prompt_version=packed.prompt_version,
                    endpoint=packed.endpoint))
            else:
                if len(batch) > 1:
                    self.unpacked_retries += 1
                asyncio.get_running_loop().create_task(self._alone(data, future))

    async def _alone(self, data: Mapping[str, Any], future: asyncio.Future) -> None:
        try:
            future.set_result(await self._inner.complete(base.TRANSACTION_RISK, data, base.FAST))
        except LlmPermanentError as error:
            future.set_exception(error)

    async def aclose(self) -> None:
        await self._inner.aclose()
