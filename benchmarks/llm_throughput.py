"""Throughput and cost of the enrichment stage against our OpenAI-compatible server, one run.

Scenarios (each against a fresh server process on loopback, through the real `openai` client):
- article: one `await` per event in a loop, as the article does;
- concurrent: our AskModel step in a Beam pipeline (DirectRunner), `--llm_concurrency` in
  flight; its rate is measured where the requests land (first request to last answer), so
  pipeline start-up does not count, and compared with the bound concurrency / latency;
- realistic latency: the same with lognormal latency (median 700 ms, p95 4 s);
- failures: 20% injected faults (429, 500, hangs, malformed JSON); every event must be
  answered or dead-lettered.
Tokens per transaction are compared with an article-style prompt (our reconstruction:
verbose instruction, pretty-printed event and history).

    python benchmarks/llm_throughput.py [--events 3000] [--concurrency 64]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
import urllib.request

import apache_beam as beam
import openai

from realtime_ai.llm import base, tasks
from realtime_ai.llm.base import LlmConfig
from realtime_ai.transforms import outputs
from realtime_ai.transforms.enrichment import AskModel
from realtime_ai.transforms.features import CustomerProfile
from realtime_ai.transforms.parsing import parse_transaction

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARTICLE_EVENTS = 25


class Server:
    """Our test server in its own process, so it does not share the benchmark's GIL."""

    def __init__(self, *flags: str):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "realtime_ai.llm.server", "--port", "0", *flags],
            stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline()
        self.base_url = line.split()[-1]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/stats") as response:
            return json.load(response)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait()


def risk_data(count: int) -> list[dict]:
    """transaction_risk data for the first `count` sample transactions, with real features."""
    profiles: dict[str, CustomerProfile] = {}
    data = []
    with open(REPO / "samples" / "transactions.jsonl") as lines:
        for line in lines:
            tx = parse_transaction(line, 65536)
            profile = profiles.setdefault(tx.customer_id, CustomerProfile(50))
            data.append(outputs.transaction_risk_data(profile.advance(tx)))
    return (data * (count // len(data) + 1))[:count]


def article_prompt(data: dict) -> list[dict]:
    """An article-style request: long instruction, pretty-printed event, no schema."""
    instruction = (
        "You are an expert fraud analyst working for a large bank. Analyze the following "
        "payment transaction carefully and determine whether it is likely to be fraudulent. "
        "Consider the amount, the merchant, the merchant category, the country, the channel, "
        "the time of day and the customer's behaviour. Think about common fraud patterns such "
        "as card testing, account takeover, impossible travel and unusual spending. Respond "
        "ONLY with a JSON object containing a risk_score between 0 and 1 and a reason.")
    return [{"role": "system", "content": instruction},
            {"role": "user", "content": "Transaction:\n" + json.dumps(data["transaction"], indent=4)
             + "\nCustomer profile:\n" + json.dumps(data["features"], indent=4)}]


async def article_loop(base_url: str, data: list[dict]) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="benchmark", max_retries=0)
    started = time.perf_counter()
    for item in data:  # one await per event
        await client.chat.completions.create(
            model="fast", messages=tasks.build_messages(base.TRANSACTION_RISK, item),
            response_format=tasks.response_format(base.TRANSACTION_RISK))
    elapsed = time.perf_counter() - started
    await client.close()
    return len(data) / elapsed


def pipeline_rate(server: Server, data: list[dict], concurrency: int, **config) -> dict:
    llm = LlmConfig(backend="openai", base_url=server.base_url, concurrency=concurrency,
                    **config)
    started = time.perf_counter()
    with beam.Pipeline(runner="DirectRunner") as pipeline:
        answered, dead = (pipeline | beam.Create(data)
                          | AskModel(llm, base.TRANSACTION_RISK, base.FAST, lambda d: d))
        answered | "CountAnswered" >> beam.combiners.Count.Globally() | "A" >> beam.Map(
            lambda n: pathlib.Path(os.environ["BENCH_OUT"], "answered").write_text(str(n)))
        dead | "CountDead" >> beam.combiners.Count.Globally() | "D" >> beam.Map(
            lambda n: pathlib.Path(os.environ["BENCH_OUT"], "dead").write_text(str(n)))
    wall = time.perf_counter() - started
    stats = server.stats()
    span = stats["last_answer_at"] - stats["first_request_at"]
    out = pathlib.Path(os.environ["BENCH_OUT"])
    return {
        "events": len(data),
        "answered": int((out / "answered").read_text()),
        "dead_lettered": int((out / "dead").read_text()),
        "requests": stats["requests"],
        "events_per_second": round(len(data) / span, 1),
        "pipeline_wall_seconds": round(wall, 1),
        "prompt_tokens_per_event": round(stats.get("prompt_tokens", 0) / len(data), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_OUT", str(RESULTS))
    RESULTS.mkdir(exist_ok=True)
    data = risk_data(args.events)
    result = {"python": platform.python_version(), "cores": os.cpu_count()}

    server = Server("--latency_ms", "200")
    try:
        article_rate = asyncio.run(article_loop(server.base_url, data[:ARTICLE_EVENTS]))
        urllib.request.urlopen(urllib.request.Request(
            server.base_url.removesuffix("/v1") + "/stats/reset", method="POST"))
        ours = pipeline_rate(server, data, args.concurrency)
    finally:
        server.stop()
    bound = args.concurrency / 0.2
    result["fixed_200ms"] = {
        "article_events_per_second": round(article_rate, 2),
        "ours": ours,
        "concurrency_bound_events_per_second": bound,
        "share_of_bound": round(ours["events_per_second"] / bound, 3),
        "speedup_over_article": round(ours["events_per_second"] / article_rate, 1),
    }

    server = Server("--latency_ms", "700", "--latency_p95_ms", "4000", "--seed", "1")
    try:
        result["lognormal_700ms_p95_4s"] = pipeline_rate(server, data[:1500], args.concurrency)
    finally:
        server.stop()

    server = Server("--latency_ms", "20", "--error_rate", "0.2", "--seed", "2")
    try:
        failures = pipeline_rate(server, data[:1000], args.concurrency, max_retries=4,
                                 timeout_seconds=2.0)
    finally:
        server.stop()
    failures["lost"] = failures["events"] - failures["answered"] - failures["dead_lettered"]
    result["failures_20_percent"] = failures

    ours_tokens = sum(tasks.estimate_tokens(tasks.build_messages(base.TRANSACTION_RISK, d))
                      for d in data[:500]) / 500
    article_tokens = sum(tasks.estimate_tokens(article_prompt(d)) for d in data[:500]) / 500
    result["prompt_tokens_per_transaction"] = {
        "ours": round(ours_tokens, 1), "article_style": round(article_tokens, 1),
        "ratio": round(ours_tokens / article_tokens, 3)}
    (RESULTS / "llm_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in ("answered", "dead"):
        (RESULTS / name).unlink(missing_ok=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
