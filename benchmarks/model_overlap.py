"""How much of the model's rate the whole main command reaches, end to end.

Our test server answers every call after a fixed --latency-ms (200 ms); with --llm_concurrency
C (64) requests of the fast model in flight the scoring alone allows at most C / latency events
per second (320/s). (The deep model has C slots of its own; --deep-latency-ms slows it alone,
to show that its calls do not slow the scoring.) The main command runs over the first N
transactions of a generated set (the samples' kind, scaled up), in batch on the DirectRunner,
each N in a fresh process; the rate is the slope between the smallest and the largest N (so
start-up, which a longer run pays once, does not count): (N2 - N1) / (wall2 - wall1), of the
median walls of --repeat runs of each (alternating sizes: a single pair moved the share of the
bound between 74% and 88% on this 2-core machine). Reported beside the bound, with the requests
the server answered per transaction (insights of the fast model, and deep analyses of escalated
transactions, are extra calls), the most requests the server had in flight, and the server's
answer rate while the model was asked (between the 10th and 90th percentile of its answer
times), and beside it the same rate when the pipeline's own transport alone sends the largest
size's worth of risk requests, the same number in flight, nothing else in its process (after
each round of runs): what this server and machine allow any client. Also per run: the seconds
from the last risk score's answer to the last answer, and what was answered meanwhile (the
calls that can only follow the scores: deep analyses of the last escalated transactions, then
the insights, asked once their windows' rows are made), and the slope without them.

    python benchmarks/model_overlap.py [--sizes 400,4000] [--latency-ms 200] [--concurrency 64]
        [--repeat 3] [--deep-latency-ms MS]

Results: benchmarks/results/model_overlap.json (with --deep-latency-ms other than --latency-ms:
model_overlap_deep_<MS>ms.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import pyarrow.parquet as pq
from llm_throughput import risk_data, risk_request_bodies  # benchmarks/, this script's folder
from stream_bench import machine_cpu_seconds

from realtime_ai.llm import base
from realtime_ai.llm.base import LlmConfig
from realtime_ai.llm.transport import ChatCompletions

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RISK_TASKS = (base.TRANSACTION_RISK, base.TRANSACTION_RISK_PACKED)
DEEP_TASKS = (base.TRANSACTION_ANALYSIS,)  # the main command's deep-model calls
DEEP_MODEL = LlmConfig().deep_model  # the main command's, as it runs here


def _transactions(count: int, folder: pathlib.Path) -> pathlib.Path:
    """The first `count` transactions of a set generated with enough customers."""
    generated = folder / "generated"
    customers = max(200, count // 12)  # the generator makes about 15 per customer in 48 h
    subprocess.run([sys.executable, "-m", "realtime_ai.samples", "generate", "--out",
                    str(generated), "--customers", str(customers), "--metrics-hours", "0.01"],
                   cwd=REPO, check=True, capture_output=True)
    lines = [line for line in (generated / "transactions.jsonl").read_text().splitlines()
             if line.strip()]
    if len(lines) < count:
        raise SystemExit(f"generated only {len(lines)} transactions, {count} asked")
    path = folder / f"transactions-{count}.jsonl"
    path.write_text("\n".join(lines[:count]) + "\n")
    return path


class Server:
    """The test server in a process of its own (not sharing the job's GIL)."""

    def __init__(self, latency_ms: float, deep_latency_ms: float):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "realtime_ai.llm.server", "--port", "0", "--latency_ms",
             str(latency_ms), "--model_latency", f"{DEEP_MODEL}={deep_latency_ms}"],
            stdout=subprocess.PIPE, text=True, cwd=REPO)
        self.base_url = self._process.stdout.readline().split()[-1]
        self._stats_url = self.base_url.removesuffix("/v1") + "/stats"

    def _get(self, path: str):
        with urllib.request.urlopen(self._stats_url + path) as response:
            return json.load(response)

    def reset(self) -> None:
        urllib.request.urlopen(urllib.request.Request(
            self._stats_url + "/reset", method="POST")).close()

    def requests(self) -> tuple[int, int, int]:
        """Requests answered: all, those of the fast model; the most in flight at once."""
        stats, by_task = self._get(""), self._get("/answer_times_by_task")
        deep = sum(len(by_task.get(task, [])) for task in DEEP_TASKS)
        requests = stats.get("requests", 0)
        return requests, requests - deep, stats.get("max_in_flight", 0)

    def after_last_risk_answer(self) -> tuple[float, dict[str, int]]:
        """Seconds from the last risk score's answer to the last answer, and the answers
        of each task meanwhile: the calls that wait for the scores (deep analyses of the
        last escalated transactions; insights, asked once every row of their window is
        made), with the steps between them that run once scoring is done."""
        by_task = self._get("/answer_times_by_task")
        last_risk = max(max(by_task.get(task, [0.0])) for task in RISK_TASKS)
        last = max(max(times) for times in by_task.values())
        after = {task: sum(1 for at in times if at > last_risk)
                 for task, times in sorted(by_task.items())}
        return round(last - last_risk, 2), {task: count for task, count in after.items()
                                            if count}

    def model_phase_rate(self) -> float:
        """Answers per second between the 10th and the 90th percentile of the answer times:
        the rate while the model is asked, without the phases before and after it."""
        times = sorted(self._get("/answer_times"))
        low, high = times[len(times) // 10], times[len(times) * 9 // 10]
        return round((len(times) * 9 // 10 - len(times) // 10) / (high - low), 1)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait()


def _run(path: pathlib.Path, output: pathlib.Path, server: Server, concurrency: int) -> dict:
    server.reset()
    _, stolen_before = machine_cpu_seconds()
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "realtime_ai.pipelines.main", f"--transactions={path}",
         f"--output={output}", f"--llm_base_url={server.base_url}",
         f"--llm_concurrency={concurrency}"],
        cwd=REPO, check=True, capture_output=True,
        env={**os.environ, "OPENAI_API_KEY": "benchmark-key"})
    wall_s = round(time.monotonic() - started, 2)
    _, stolen_after = machine_cpu_seconds()
    # Rows the local rules answered because the server's answers were refused: a run of them
    # measures no model at all (the server's command line once answered every request 401).
    models = pq.read_table(output / "transactions", columns=["model"]).column("model")
    degraded = sum(1 for model in models.to_pylist() if model and "degraded" in model)
    if degraded:
        raise SystemExit(f"{degraded} of {len(models)} rows were answered by the local rules "
                         "(degraded): the test server's answers were refused")
    after_s, answers_after = server.after_last_risk_answer()
    requests, fast_requests, most_in_flight = server.requests()
    # the cores this VM's host took meanwhile: a run with much of it measures the host
    return {"wall_s": wall_s, "requests": requests, "fast_model_requests": fast_requests,
            "most_in_flight": most_in_flight,
            "model_phase_requests_per_s": server.model_phase_rate(),
            "after_last_risk_answer_s": after_s,
            "answers_after_last_risk_answer": answers_after,
            "stolen_by_host_cores": round((stolen_after - stolen_before) / wall_s, 2)}


async def _send_alone(base_url: str, bodies: list[dict], concurrency: int) -> None:
    client = ChatCompletions(base_url, "benchmark-key", concurrency)
    try:
        await asyncio.gather(*(client.post(body) for body in bodies))
    finally:
        await client.close()


def _client_alone(server: Server, count: int, concurrency: int) -> float:
    """The server's answer rate while asked (as `model_phase_rate`) by the pipeline's own
    transport with nothing else in its process: `count` risk requests, `concurrency` in
    flight. What this machine and server allow any client, beside the bound's arithmetic."""
    bodies = risk_request_bodies(risk_data(count))
    server.reset()
    asyncio.run(_send_alone(server.base_url, bodies, concurrency))
    return server.model_phase_rate()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="400,4000")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each size")
    parser.add_argument("--deep-latency-ms", type=float, default=None,
                        help="the deep model's latency (default: --latency-ms)")
    args = parser.parse_args()
    deep_latency_ms = args.latency_ms if args.deep_latency_ms is None else args.deep_latency_ms
    results_file = RESULTS / ("model_overlap.json" if deep_latency_ms == args.latency_ms
                              else f"model_overlap_deep_{deep_latency_ms:g}ms.json")
    sizes = sorted(int(size) for size in args.sizes.split(","))
    bound = args.concurrency / (args.latency_ms / 1000)
    load_before = os.getloadavg()
    runs = {}
    alone: list[float] = []
    with tempfile.TemporaryDirectory(prefix="model-overlap-") as tmp:
        folder = pathlib.Path(tmp)
        server = Server(args.latency_ms, deep_latency_ms)
        try:
            inputs = {size: _transactions(size, folder) for size in sizes}
            for attempt in range(args.repeat):
                for size in sizes:
                    run = _run(inputs[size], folder / f"out-{size}-{attempt}", server,
                               args.concurrency)
                    runs.setdefault(size, []).append(run)
                    print(f"{size} transactions: {run['wall_s']} s, {run['requests']} requests"
                          f" ({run['fast_model_requests']} of the fast model; "
                          f"{run['model_phase_requests_per_s']}/s while the model was asked, "
                          f"{run['most_in_flight']} at most in flight)"
                          f", {run['stolen_by_host_cores']} cores stolen by the host; "
                          f"{run['after_last_risk_answer_s']} s after the last risk answer "
                          f"({run['answers_after_last_risk_answer']})", flush=True)
                alone.append(_client_alone(server, sizes[-1], args.concurrency))
                print(f"the transport alone: {alone[-1]} requests/s while asked", flush=True)
        finally:
            server.stop()
    low, high = sizes[0], sizes[-1]
    walls = {size: statistics.median(run["wall_s"] for run in runs[size]) for size in sizes}
    rate = (high - low) / (walls[high] - walls[low])
    # The same slope to the last risk score's answer (each run's wall less what came after
    # it): what the calls that can only follow the scores cost the end-to-end rate.
    walls_to_last_risk = {size: statistics.median(
        run["wall_s"] - run["after_last_risk_answer_s"] for run in runs[size])
        for size in sizes}
    rate_to_last_risk = (high - low) / (walls_to_last_risk[high] - walls_to_last_risk[low])
    # Insight windows are fast-model calls of their own: the bound counted in transactions
    # is the fast model's rate over the calls each transaction brings it (deep analyses
    # have the deep model's slots).
    requests_per_transaction = runs[high][0]["fast_model_requests"] / high
    bound_in_transactions = bound / requests_per_transaction
    result = {
        "latency_ms": args.latency_ms, "deep_latency_ms": deep_latency_ms,
        "concurrency": args.concurrency,
        "model_bound_events_per_s": round(bound, 1), "runs": runs, "median_wall_s": walls,
        "end_to_end_events_per_s": round(rate, 1),
        "median_model_phase_requests_per_s": statistics.median(
            run["model_phase_requests_per_s"] for run in runs[high]),
        "share_of_bound": round(rate / bound, 3),
        "median_after_last_risk_answer_s": {size: statistics.median(
            run["after_last_risk_answer_s"] for run in runs[size]) for size in sizes},
        "events_per_s_to_last_risk_answer": round(rate_to_last_risk, 1),
        "share_of_bound_to_last_risk_answer": round(rate_to_last_risk / bound, 3),
        "fast_model_requests_per_transaction": round(requests_per_transaction, 3),
        "model_bound_transactions_per_s": round(bound_in_transactions, 1),
        "share_of_bound_in_transactions": round(rate / bound_in_transactions, 3),
        # the same server asked by the pipeline's transport alone, between the runs: the
        # share of the bound any client reaches here, and the pipeline's model phase beside it
        "transport_alone_requests_per_s": alone,
        "median_transport_alone_requests_per_s": statistics.median(alone),
        "load_average_before_after": [round(load_before[0], 2),
                                      round(os.getloadavg()[0], 2)],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    results_file.write_text(json.dumps(result, indent=1) + "\n")
    print(f"end to end {rate:.1f} events/s = {rate / bound:.0%} of the model's "
          f"{bound:.0f}/s ({result['fast_model_requests_per_transaction']} fast-model "
          f"requests per transaction: "
          f"{result['share_of_bound_in_transactions']:.0%} of "
          f"{result['model_bound_transactions_per_s']:.0f} transactions/s); the server "
          f"answered {result['median_model_phase_requests_per_s']}/s while the pipeline asked, "
          f"{result['median_transport_alone_requests_per_s']}/s asked by the transport alone; "
          f"to the last risk answer {rate_to_last_risk:.1f} events/s = "
          f"{rate_to_last_risk / bound:.0%}; "
          f"load average {result['load_average_before_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
