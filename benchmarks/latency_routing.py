"""How long escalations take while the deep model is slower than --latency_budget_ms.

The test server answers the deep model after --deep-ms (2000 ms) and the fast one at once;
N escalations (deep analyses of distinct transactions, --escalations 200) go through the
pipeline's model client with --latency_budget_ms (500), --concurrency at a time (1: one after
the other, as a quiet stream sends them). Reports the wall time, how many the deep model
answered, how many were cut at the budget and answered by the fast model, and how many went
straight to the fast model. Runs against whichever realtime_ai is imported first: for the
code before up-front routing, export an older commit and put it first on PYTHONPATH.

    PYTHONPATH=. python benchmarks/latency_routing.py [--deep-ms 2000] [--budget-ms 500]
        [--escalations 200] [--concurrency 1]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

from realtime_ai.llm import base, runner, server
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.client import make_backend

FEATURES = {"history_count": 20, "mean_amount": 30.0, "std_amount": 10.0, "amount_zscore": 6.2,
            "velocity_1h": 4, "amount_1h": 900.0, "seconds_since_last": 40.0,
            "new_country": True, "new_merchant_category": True, "last_country": "DE"}


def _escalation(number: int) -> dict:
    transaction = {"transaction_id": f"tx-{number}", "customer_id": f"c-{number % 50}",
                   "amount": 480.0, "currency": "EUR", "merchant": "crypto-x",
                   "merchant_category": "crypto", "country": "BR", "channel": "web",
                   "timestamp": "2026-01-05T10:00:00Z"}
    return {"transaction": transaction, "features": FEATURES,
            "fast_assessment": {"risk_score": 0.93, "reason": "amount spike, new country"},
            "history": [], "playbook": []}


async def _escalate(backend, count: int, concurrency: int) -> list:
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int):
        async with slots:
            return await backend.complete(base.TRANSACTION_ANALYSIS, _escalation(number),
                                          base.DEEP)

    return await asyncio.gather(*(one(number) for number in range(count)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deep-ms", type=float, default=2000.0)
    parser.add_argument("--budget-ms", type=float, default=500.0)
    parser.add_argument("--escalations", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "benchmark-key")
    handle = server.start_in_thread(port=0, model_latency_ms={"deep-m": args.deep_ms})
    backend = make_backend(LlmConfig(backend="openai", base_url=handle.base_url,
                                     fast_model="fast-m", deep_model="deep-m",
                                     latency_budget_ms=args.budget_ms))
    try:
        started = time.monotonic()
        results = runner.submit(_escalate(backend, args.escalations,
                                          args.concurrency)).result()
        wall = time.monotonic() - started
        runner.submit(backend.aclose()).result(10)
    finally:
        handle.stop()
    routed = sum(getattr(result, "routed", False) for result in results)
    print(json.dumps({
        "escalations": args.escalations, "deep_ms": args.deep_ms, "budget_ms": args.budget_ms,
        "concurrency": args.concurrency, "wall_s": round(wall, 2),
        "answered_by_deep": sum(result.model == "deep-m" for result in results),
        "cut_then_fast": sum(result.fell_back for result in results),
        "straight_to_fast": routed,
        "waiting_out_every_budget_s": args.escalations * args.budget_ms / 1000
        / args.concurrency,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
