"""Throughput and cost of the enrichment stage against our OpenAI-compatible server, one run.

Scenarios (each against a fresh server process on loopback, through the real `openai` client):
- article: one `await` per event in a loop, as the article does;
- concurrent: our AskModel step in a Beam pipeline (DirectRunner), `--llm_concurrency` in
  flight; its rate is measured where the requests land (first request to last answer), so
  pipeline start-up does not count, and compared with the bound concurrency / latency;
- the same at half the concurrency (the steady share of the bound when the worker's CPU
  has slack);
- packed: 10 transactions per request, bound concurrency x 10 / latency;
- realistic latency: the same with lognormal latency (median 700 ms, p95 4 s), bound
  concurrency / mean latency;
- a server-side rate limit (`--rate_limit_rpm`) with the same client-side budget: the share of
  the limit sustained and of requests answered 429;
- failures: 20% injected faults (429, 500, hangs, malformed JSON); every event must be
  answered or dead-lettered;
- client CPU: the same risk requests, `--concurrency` in flight, sent by the OpenAI SDK's
  generic post (over its aiohttp transport) and by our transport (llm/transport.py) in
  alternating rounds against one server: CPU seconds of this process per request.
Tokens per transaction are compared with an article-style prompt (our reconstruction:
verbose instruction, pretty-printed event and history).

    python benchmarks/llm_throughput.py [--events 3000] [--concurrency 64]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import apache_beam as beam
import httpx2
import openai
from apache_beam.options.pipeline_options import PipelineOptions

from realtime_ai.core import model_inputs
from realtime_ai.core.features import CustomerProfile
from realtime_ai.core.parsing import parse_transaction
from realtime_ai.core.replay import Replayable
from realtime_ai.llm import base, tasks
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.transport import ChatCompletions
from realtime_ai.pipelines.main import local_batch_runner
from realtime_ai.transforms.ask_model import AskModel

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARTICLE_EVENTS = 25
PACKED = 10  # transactions per request in the packed scenario


class Server:
    """Our test server in its own process, so it does not share the benchmark's GIL."""

    def __init__(self, *flags: str):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "realtime_ai.llm.server", "--port", "0", *flags],
            stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline()
        self.base_url = line.split()[-1]

    def stats(self, path: str = "/stats"):
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + path) as response:
            return json.load(response)

    def steady_rate(self) -> float:
        """Answers per second between the 10th and 90th percentile answer: the sustained
        rate, without the ramp-up and the final drain."""
        times = sorted(self.stats("/stats/answer_times"))
        low, high = times[len(times) // 10], times[len(times) * 9 // 10]
        return (len(times) * 8 // 10) / (high - low)

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
            data.append(model_inputs.transaction_risk_data(profile.advance(tx)))
    # Repeats get their own transaction ids: every event is a distinct request, none is
    # answered from the cache.
    return [_with_id_suffix(data[i % len(data)], i // len(data)) for i in range(count)]


def _with_id_suffix(item: dict, copy: int) -> dict:
    if copy == 0:
        return item
    transaction = {**item["transaction"],
                   "transaction_id": f"{item['transaction']['transaction_id']}-{copy}"}
    return {**item, "transaction": transaction}


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
    """Runs AskModel over `data`; answers' latencies land in `latencies_ms` of the result."""
    llm = LlmConfig(backend="openai", base_url=server.base_url, concurrency=concurrency,
                    **config)
    out = pathlib.Path(tempfile.mkdtemp(prefix="llm-bench-"))
    started = time.perf_counter()
    options = PipelineOptions(["--runner=DirectRunner"])
    # the engine the main command runs a batch job on, on any machine
    with beam.Pipeline(runner=local_batch_runner(options), options=options) as pipeline:
        answered, dead = (pipeline | beam.Create(data)
                          | AskModel(llm, base.TRANSACTION_RISK, base.FAST, lambda d: d,
                                  lambda d: Replayable(json.dumps(d), None)))
        (answered | "Latency" >> beam.Map(lambda answer: f"{answer.result.latency_ms:.1f}")
         | "WriteLatencies" >> beam.io.WriteToText(str(out / "latency")))
        (dead | "Reason" >> beam.Map(lambda d: d.error)
         | "WriteDead" >> beam.io.WriteToText(str(out / "dead")))
    wall = time.perf_counter() - started
    latencies = [float(line) for f in out.glob("latency*") for line in f.read_text().split()]
    dead_count = sum(len(f.read_text().splitlines()) for f in out.glob("dead*"))
    stats = server.stats()
    span = stats["last_answer_at"] - stats["first_request_at"]
    requests = stats["requests"]
    return {
        "events": len(data),
        "answered": len(latencies),
        "dead_lettered": dead_count,
        "requests": requests,
        "requests_429": stats.get("status_429", 0),
        "share_429": round(stats.get("status_429", 0) / requests, 4),
        "events_per_second": round(len(data) / span, 1),
        "steady_answers_per_second": round(server.steady_rate(), 1),
        "requests_per_minute": round(requests / span * 60, 1),
        "pipeline_wall_seconds": round(wall, 1),
        "prompt_tokens_per_event": round(stats.get("prompt_tokens", 0) / len(data), 1),
        "latencies_ms": latencies,
    }


async def _client_cpu_ms(send, bodies: list[dict], concurrency: int) -> float:
    """Process CPU milliseconds per request of sending `bodies`, `concurrency` at a time."""
    slots = asyncio.Semaphore(concurrency)

    async def one(body: dict) -> None:
        async with slots:
            json.loads(await send(body))

    started = time.process_time()
    await asyncio.gather(*(one(body) for body in bodies))
    return (time.process_time() - started) * 1000.0 / len(bodies)


def risk_request_bodies(data: list[dict]) -> list[dict]:
    """The fast model's chat request for each transaction_risk data, as the pipeline sends it."""
    task = base.TRANSACTION_RISK
    return [tasks.chat_request(task, "fast", tasks.build_messages(task, item),
                               tasks.max_answer_tokens(task, item)) for item in data]


async def client_cpu(base_url: str, data: list[dict], concurrency: int, rounds: int = 3
                     ) -> dict:
    """Median CPU ms per request of the SDK's post and of our transport, rounds alternating
    (this machine's speed drifts within minutes); warmed up before measuring."""
    bodies = risk_request_bodies(data)
    sdk = openai.AsyncOpenAI(base_url=base_url, api_key="benchmark", max_retries=0,
                             http_client=openai.DefaultAioHttpClient())
    ours = ChatCompletions(base_url, "benchmark", concurrency)

    async def sdk_post(body: dict) -> bytes:
        return (await sdk.post("/chat/completions", cast_to=httpx2.Response,
                               body=body)).content

    senders = {"openai_sdk_post": sdk_post, "ours": ours.post}
    samples: dict[str, list[float]] = {name: [] for name in senders}
    try:
        for send in senders.values():
            await _client_cpu_ms(send, bodies[:concurrency * 2], concurrency)
        for _ in range(rounds):
            for name, send in senders.items():
                samples[name].append(await _client_cpu_ms(send, bodies, concurrency))
    finally:
        await sdk.close()
        await ours.close()
    result = {f"{name}_cpu_ms_per_request": round(statistics.median(values), 3)
              for name, values in samples.items()}
    result["requests_per_round"] = len(bodies)
    result["sdk_over_ours"] = round(result["openai_sdk_post_cpu_ms_per_request"]
                                    / result["ours_cpu_ms_per_request"], 2)
    return result


def svg_cdf(series: dict[str, list[float]], path: pathlib.Path) -> None:
    """A latency CDF per scenario (log-scaled x axis), as a small standalone SVG."""
    width, height, pad = 640, 360, 50
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    low, high = math.log10(10.0), math.log10(max(max(v) for v in series.values()) * 1.1)

    def x(ms: float) -> float:
        return pad + (math.log10(max(ms, 10.0)) - low) / (high - low) * (width - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{pad}" y="20">Model call latency, CDF (x: ms, log scale)</text>']
    for decade in range(1, 7):
        ms = 10.0 ** decade
        if low <= decade <= high:
            parts.append(f'<line x1="{x(ms):.1f}" y1="{pad}" x2="{x(ms):.1f}" '
                         f'y2="{height - pad}" stroke="#ddd"/>'
                         f'<text x="{x(ms) - 10:.1f}" y="{height - pad + 15}">{ms:g}</text>')
    for i, (name, values) in enumerate(series.items()):
        ordered = sorted(values)
        points = " ".join(
            f"{x(v):.1f},{height - pad - (k + 1) / len(ordered) * (height - 2 * pad):.1f}"
            for k, v in enumerate(ordered))
        colour = colours[i % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                     f'points="{points}"/>'
                     f'<text x="{width - pad - 200}" y="{pad + 15 * i}" fill="{colour}">'
                     f'{name}</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))], 1)


def _scenario(flags: list[str], data: list[dict], concurrency: int, **config) -> dict:
    server = Server(*flags)
    try:
        return pipeline_rate(server, data, concurrency, **config)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rate_limit_rpm", type=int, default=2400)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    data = risk_data(args.events)
    result = {"python": platform.python_version(), "cores": os.cpu_count()}
    latencies = {}

    server = Server("--latency_ms", "200")
    try:
        article_rate = asyncio.run(article_loop(server.base_url, data[:ARTICLE_EVENTS]))
    finally:
        server.stop()
    ours = _scenario(["--latency_ms", "200"], data, args.concurrency)
    latencies["fixed 200 ms"] = ours.pop("latencies_ms")
    bound = args.concurrency / 0.2
    result["fixed_200ms_unpacked"] = {
        "article_events_per_second": round(article_rate, 2),
        "ours": ours,
        "concurrency_bound_events_per_second": bound,
        "share_of_bound": round(ours["events_per_second"] / bound, 3),
        "steady_share_of_bound": round(ours["steady_answers_per_second"] / bound, 3),
        "speedup_over_article": round(ours["events_per_second"] / article_rate, 1),
    }

    half = args.concurrency // 2
    lower = _scenario(["--latency_ms", "200"], data[:2000], half)
    lower.pop("latencies_ms")
    lower["steady_share_of_bound"] = round(lower["steady_answers_per_second"] / (half / 0.2), 3)
    result[f"fixed_200ms_unpacked_concurrency_{half}"] = lower

    # Packed, a request carries 10 events: more events, so the run is not all ramp-up.
    packed = _scenario(["--latency_ms", "200"], risk_data(args.events * 4), args.concurrency,
                       fast_batch_size=PACKED)
    packed.pop("latencies_ms")
    packed["concurrency_bound_events_per_second"] = args.concurrency * PACKED / 0.2
    packed["share_of_bound"] = round(
        packed["events_per_second"] / packed["concurrency_bound_events_per_second"], 3)
    result[f"fixed_200ms_packed_{PACKED}"] = packed

    realistic = _scenario(["--latency_ms", "700", "--latency_p95_ms", "4000", "--seed", "1"],
                          data[:1500], args.concurrency)
    realistic_latencies = latencies["lognormal p50 0.7 s, p95 4 s"] = realistic.pop(
        "latencies_ms")
    realistic["latency_p50_p95_p99_ms"] = [percentile(realistic_latencies, p)
                                           for p in (50, 95, 99)]
    # With latencies this uneven the bound is concurrency / mean latency; the whole run's
    # rate also pays for the slowest calls at the end, the steady rate does not.
    mean_seconds = sum(realistic_latencies) / len(realistic_latencies) / 1000.0
    realistic["concurrency_bound_events_per_second"] = round(args.concurrency / mean_seconds, 1)
    realistic["steady_share_of_bound"] = round(
        realistic["steady_answers_per_second"]
        / realistic["concurrency_bound_events_per_second"], 3)
    result["lognormal_700ms_p95_4s"] = realistic

    limited = _scenario(["--latency_ms", "100", "--rate_limit_rpm", str(args.rate_limit_rpm)],
                        data[: int(args.rate_limit_rpm * 1.5)], args.concurrency,
                        requests_per_minute=args.rate_limit_rpm)
    limited.pop("latencies_ms")
    limited["share_of_server_limit"] = round(
        limited["requests_per_minute"] / args.rate_limit_rpm, 3)
    result[f"server_limit_{args.rate_limit_rpm}_rpm"] = limited

    failures = _scenario(["--latency_ms", "20", "--error_rate", "0.2", "--seed", "2"],
                         data[:1000], args.concurrency, max_retries=4, timeout_seconds=2.0,
                         on_model_failure=base.DEAD_LETTER)  # what fails for good, not degraded
    failures.pop("latencies_ms")
    failures["lost"] = failures["events"] - failures["answered"] - failures["dead_lettered"]
    result["failures_20_percent"] = failures

    server = Server("--latency_ms", "200")
    try:
        result["client_cpu_200ms"] = asyncio.run(client_cpu(server.base_url, data[:2000],
                                                            args.concurrency))
    finally:
        server.stop()

    ours_tokens = sum(tasks.estimate_tokens(tasks.build_messages(base.TRANSACTION_RISK, d))
                      for d in data[:500]) / 500
    article_tokens = sum(tasks.estimate_tokens(article_prompt(d)) for d in data[:500]) / 500
    result["prompt_tokens_per_transaction"] = {
        "article_style": round(article_tokens, 1),
        "ours_unpacked": round(ours_tokens, 1),
        f"ours_packed_{PACKED}": packed["prompt_tokens_per_event"],
        "packed_over_article": round(packed["prompt_tokens_per_event"] / article_tokens, 3)}
    svg_cdf(latencies, RESULTS / "llm_latency_cdf.svg")
    (RESULTS / "llm_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
