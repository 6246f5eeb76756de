"""Request packing: several fast-tier risk requests in one model call.

Requests that arrive within `batch_wait_ms` of each other (up to `fast_batch_size`) share one
instruction and one call; the answer must hold one schema-valid result per transaction_id.
A transaction whose result is missing or invalid is asked again alone, and so is every
transaction of a packed call that failed for good: packing never loses or guesses an answer.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

from realtime_ai.llm import base, tasks
from realtime_ai.llm.base import LlmBackend, LlmConfig, LlmPermanentError, LlmResult, Spend

_RESULT_SCHEMA = tasks.SCHEMAS[base.TRANSACTION_RISK]


def share_out(spent: tuple[Spend, ...], members: int) -> list[tuple[Spend, ...]]:
    """Each member's share of a packed call's requests: the tokens split so that the shares
    add up to the whole, each request counted once (with the first member)."""
    shares: list[list[Spend]] = [[] for _ in range(members)]
    for spend in spent:
        for i, share in enumerate(shares):
            share.append(dataclasses.replace(
                spend, requests=spend.requests if i == 0 else 0,
                input_tokens=_part(spend.input_tokens, members, i),
                output_tokens=_part(spend.output_tokens, members, i)))
    return [tuple(share) for share in shares]


def _part(total: int, members: int, i: int) -> int:
    return total // members + (i < total % members)


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
        started = time.perf_counter()
        future = asyncio.get_running_loop().create_future()
        self._queue.append((data, future))
        if len(self._queue) >= self._size:
            self._flush()
        elif self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self._wait, self._flush)
        try:
            result = await future
        except LlmPermanentError as error:
            error.latency_ms = (time.perf_counter() - started) * 1000.0
            raise
        # the event's latency: its wait to be packed, and the calls it took
        return dataclasses.replace(result, latency_ms=(time.perf_counter() - started) * 1000.0)

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._queue = self._queue, []
        if batch:
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[tuple[Mapping[str, Any], asyncio.Future]]) -> None:
        try:
            await self._answer(batch)
        except Exception as error:  # noqa: BLE001 - a bug: every element hears of it, none hangs
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)

    async def _answer(self, batch: list[tuple[Mapping[str, Any], asyncio.Future]]) -> None:
        ids = [data["transaction"]["transaction_id"] for data, _ in batch]
        results: dict[str, dict] = {}
        packed: LlmResult | None = None
        shares: list[tuple[Spend, ...]] = [()] * len(batch)
        if len(set(ids)) == len(ids) and len(batch) > 1:
            self.packed_calls += 1
            try:
                packed = await self._inner.complete(
                    base.TRANSACTION_RISK_PACKED,
                    {"transactions": [data for data, _ in batch]}, base.FAST)
                results = split_packed(packed.answer, ids)
                shares = share_out(packed.spent, len(batch))
            except LlmPermanentError as error:
                shares = share_out(error.spent, len(batch))  # every member is asked alone
        for (data, future), tx_id, share in zip(batch, ids, shares, strict=True):
            if tx_id in results:
                future.set_result(LlmResult(answer=results[tx_id], model=packed.model,
                                            latency_ms=packed.latency_ms, spent=share,
                                            prompt_version=packed.prompt_version,
                                            endpoint=packed.endpoint))
            else:
                if len(batch) > 1:
                    self.unpacked_retries += 1
                asyncio.get_running_loop().create_task(self._alone(data, future, share))

    async def _alone(self, data: Mapping[str, Any], future: asyncio.Future,
                     share: tuple[Spend, ...]) -> None:
        try:
            result = await self._inner.complete(base.TRANSACTION_RISK, data, base.FAST)
        except LlmPermanentError as error:
            error.spent = share + error.spent
            future.set_exception(error)
        except Exception as error:  # noqa: BLE001 - a bug: the element hears of it, never hangs
            future.set_exception(error)
        else:
            future.set_result(dataclasses.replace(result, spent=share + result.spent))

    async def aclose(self) -> None:
        await self._inner.aclose()
